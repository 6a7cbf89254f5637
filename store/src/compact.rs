//! The encoding of a packed `session_events` row (kind `compact`): its events in order, a
//! frame or a nudge as a tagged array of its values rather than an object of named fields.
//!
//! Every frame is recorded, so at high frame rates the bytes of each row are what the database
//! spends its time on (written to the log, then to the table): an object of a frame, with the
//! envelope's and the fields' names, is more than twice its values. Other events are rare
//! and keep their full form (`{"e": {"kind": …, "data": …}}`). Rows of kind `batch`, written
//! before, hold a plain array of event objects and are read as they were.

use inside_schemas::{EventBody, FeatureFrame, Nudge, NudgeType};
use serde::{Deserialize, Serialize};

/// One event as written: borrowed from the batch, so encoding copies nothing but bytes.
#[derive(Serialize)]
enum CompactRef<'a> {
    /// `timestamp_ms`, `speaking_rate`, `overlap_ratio`, `seq`, `received_ms`.
    #[serde(rename = "f")]
    Frame(i64, f64, f64, Option<i64>, Option<i64>),
    /// `nudge_type`, `intensity`, `message`, `frame_seq`, `frame_timestamp_ms`.
    #[serde(rename = "n")]
    Nudge(NudgeType, u8, &'a str, Option<i64>, Option<i64>),
    #[serde(rename = "e")]
    Event(&'a EventBody),
}

/// One event as read: the same shapes as [`CompactRef`], owned.
#[derive(Deserialize)]
enum Compact {
    #[serde(rename = "f")]
    Frame(i64, f64, f64, Option<i64>, Option<i64>),
    #[serde(rename = "n")]
    Nudge(NudgeType, u8, String, Option<i64>, Option<i64>),
    #[serde(rename = "e")]
    Event(EventBody),
}

impl<'a> From<&'a EventBody> for CompactRef<'a> {
    fn from(body: &'a EventBody) -> Self {
        match body {
            EventBody::Frame(f) => CompactRef::Frame(
                f.timestamp_ms,
                f.speaking_rate,
                f.overlap_ratio,
                f.seq,
                f.received_ms,
            ),
            EventBody::Nudge(n) => CompactRef::Nudge(
                n.nudge_type,
                n.intensity,
                &n.message,
                n.frame_seq,
                n.frame_timestamp_ms,
            ),
            other => CompactRef::Event(other),
        }
    }
}

impl From<Compact> for EventBody {
    fn from(c: Compact) -> Self {
        match c {
            Compact::Frame(timestamp_ms, speaking_rate, overlap_ratio, seq, received_ms) => {
                EventBody::Frame(FeatureFrame {
                    timestamp_ms,
                    speaking_rate,
                    overlap_ratio,
                    seq,
                    received_ms,
                })
            }
            Compact::Nudge(nudge_type, intensity, message, frame_seq, frame_timestamp_ms) => {
                EventBody::Nudge(Nudge {
                    nudge_type,
                    intensity,
                    message,
                    frame_seq,
                    frame_timestamp_ms,
                })
            }
            Compact::Event(body) => body,
        }
    }
}

/// Bytes a frame takes, about: the buffer is sized once rather than grown as it fills.
const PER_EVENT: usize = 64;

/// The payload of a `compact` row holding `bodies`, in order.
pub(crate) fn encode<'a>(
    bodies: impl ExactSizeIterator<Item = &'a EventBody>,
) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(2 + PER_EVENT * bodies.len());
    // written straight from the batch, with no list of the encoded forms in between
    serde::Serializer::collect_seq(
        &mut serde_json::Serializer::new(&mut out),
        bodies.map(CompactRef::from),
    )?;
    // serde_json writes UTF-8 only; checked rather than assumed
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// The events of a `compact` row's payload, in order.
pub(crate) fn decode(payload: &str) -> serde_json::Result<Vec<EventBody>> {
    let rows: Vec<Compact> = serde_json::from_str(payload)?;
    Ok(rows.into_iter().map(EventBody::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use inside_schemas::{SegmentMark, SpeakerRecord, SpeakerSegment};

    fn frame(seq: Option<i64>, received_ms: Option<i64>) -> EventBody {
        EventBody::Frame(FeatureFrame {
            timestamp_ms: i64::MIN,
            speaking_rate: 4.123_456_789_012_345,
            overlap_ratio: 0.1,
            seq,
            received_ms,
        })
    }

    #[test]
    fn every_kind_of_event_comes_back_as_it_was_in_order() {
        let bodies = vec![
            frame(Some(1), Some(1_765_000_000_123)),
            EventBody::Nudge(Nudge {
                nudge_type: NudgeType::LetPartnerFinish,
                intensity: 3,
                message: "Let them finish \"that\" ✓".into(),
                frame_seq: Some(1),
                frame_timestamp_ms: None,
            }),
            frame(None, None),
            EventBody::Speaker(SpeakerRecord {
                segment: SpeakerSegment {
                    user_id: None,
                    score: -0.5,
                    start_ms: 0,
                    end_ms: 1500,
                },
                stream_started_ms: Some(7),
            }),
            EventBody::Segment(SegmentMark {
                seq: 3,
                start_ms: 0,
                end_ms: 1500,
                stream_started_ms: None,
            }),
            frame(Some(i64::MAX), Some(i64::MAX)),
        ];
        let payload = encode(bodies.iter()).unwrap();
        assert_eq!(decode(&payload).unwrap(), bodies);
    }

    #[test]
    fn a_frame_takes_under_half_of_its_object_form() {
        let f = frame(Some(123_456), Some(1_765_000_000_123));
        let compact = encode(std::iter::once(&f)).unwrap();
        let object = serde_json::to_string(&[&f]).unwrap();
        assert!(
            compact.len() * 2 < object.len(),
            "{compact} against {object}"
        );
    }

    #[test]
    fn a_payload_of_unknown_shape_is_an_error_not_a_panic() {
        for bad in [
            "{}",
            "[{\"f\":[1]}]",
            "[{\"x\":[]}]",
            "[{\"n\":[\"NOPE\",1,\"m\",null,null]}]",
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
