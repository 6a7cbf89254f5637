//! A live audio segment as the bus carries it, checked: its session and member from the
//! subject, its stream times from the headers (within bounds), its samples finite f32. Every
//! message is untrusted, whether it came from the queue group or was forwarded by another
//! worker (the forwarded subject restored first, `affinity.rs`).

use inside_bus::inbound::{reject, MAX_AUDIO_PAYLOAD};
use inside_bus::{sid_uid, BusMessage};
use inside_schemas::AudioSegmentMeta;
use uuid::Uuid;

use super::derived::SegmentAudio;

/// Longest segment accepted (stream times in its headers); segments are cut at about 1.5 s.
const MAX_SEGMENT_MS: u64 = 10_000;

/// One segment on its way through.
pub(super) struct Pending {
    pub sid: Uuid,
    pub uid: Uuid,
    pub meta: AudioSegmentMeta,
    pub samples: Vec<f32>,
    /// Members of the session with an account: the derived analysis's streams.
    pub members: usize,
}

/// A stream time from the headers as the events hold it.
pub(super) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Where the segment's stream started on the server clock, when the gateway said.
pub(super) fn stream_started(meta: &AudioSegmentMeta) -> Option<i64> {
    meta.stream_started_ms.and_then(|v| i64::try_from(v).ok())
}

/// The segment, once its subject, headers and samples pass the checks; `None` (refused and
/// counted) otherwise.
pub(super) fn parse(msg: BusMessage) -> Option<Pending> {
    let Some((sid, uid)) = sid_uid(&msg.subject) else {
        reject("audio", "subject", None);
        return None;
    };
    let invalid = |reason| {
        metrics::counter!("inside_audio_segments_invalid_total").increment(1);
        reject("audio", reason, Some(sid));
        None
    };
    if msg.payload.len() > MAX_AUDIO_PAYLOAD {
        return invalid("too_large");
    }
    let Some(meta) = AudioSegmentMeta::from_headers(|h| msg.header(h)) else {
        return invalid("headers");
    };
    if meta.end_ms < meta.start_ms || meta.end_ms - meta.start_ms > MAX_SEGMENT_MS {
        return invalid("out_of_range");
    }
    if !msg.payload.len().is_multiple_of(4) {
        return invalid("malformed");
    }
    let samples: Vec<f32> = msg
        .payload
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // NaN or inf would poison the whole batch's GEMMs
    if samples.iter().any(|s| !s.is_finite()) {
        return invalid("out_of_range");
    }
    Some(Pending {
        sid,
        uid,
        meta,
        samples,
        members: 0,
    })
}

impl Pending {
    /// A segment with no samples: the gateway's mark that the member's stream ended.
    pub(super) fn ends_stream(&self) -> bool {
        self.samples.is_empty()
    }

    /// The segment on the server clock, for the derived analysis; `None` from a gateway that
    /// does not say where the stream started.
    pub(super) fn audio(&self) -> Option<SegmentAudio<'_>> {
        let started = i64::try_from(self.meta.stream_started_ms?).ok()?;
        Some(SegmentAudio {
            sid: self.sid,
            uid: self.uid,
            start_ms: started.checked_add(i64::try_from(self.meta.start_ms).ok()?)?,
            samples: &self.samples,
            members: self.members,
            place: Some((started, self.meta.seq)),
            ends: self.ends_stream(),
        })
    }
}
