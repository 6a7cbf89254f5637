//! What the hub accepts from the bus before a phone sees it. Nudges, speaker events and pokes
//! are shown on a user's screen and state events close sockets, so each is parsed strictly
//! (its schema type, no unknown fields kept, size capped, numbers and texts in range) and
//! re-encoded from the parsed value; anything else is dropped, counted in
//! `inside_bus_rejected_total{subject_kind,reason}` and logged without its payload. The same
//! checks run again on what a resumed socket replays from the session's history.
//!
//! The checks guard a bus others can publish on. The in-process bus of the embedded default
//! is not one: its nudges and speaker events were encoded by this process from its own types
//! a moment before, so they are passed on as the JSON they are ([`Origin::Process`]).

use inside_bus::inbound::{reject, MAX_JSON_PAYLOAD};
use inside_bus::{BusMessage, StateEvent, EVENT_ID_HEADER, SESSION_EVENT_IDS_HEADER};
use inside_schemas::{HistoryKind, Nudge, Poke, SpeakerSegment};
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use uuid::Uuid;

/// Longest nudge text accepted (the engine's are one short sentence).
const MAX_NUDGE_MESSAGE: usize = 500;
/// Longest poke message (the REST route allows 500 characters).
const MAX_POKE_MESSAGE: usize = 500;
/// Participants one gateway may announce for a session.
const MAX_PARTICIPANTS: usize = 1_000;

/// The subject kinds the hub reads, as the metric labels them.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Nudges,
    Speakers,
    Pokes,
    State,
}

impl Kind {
    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Nudges => "nudges",
            Kind::Speakers => "speakers",
            Kind::Pokes => "pokes",
            Kind::State => "state",
        }
    }
}

/// Who could have published a message the hub reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A shared bus (NATS): anyone with its credentials.
    Bus,
    /// This process's own pipeline, over the in-process bus.
    Process,
}

/// A message that passed: the JSON to splice into a server message, or a state event.
pub(super) enum Accepted<'a> {
    Json(Cow<'a, str>),
    State(StateEvent),
}

/// Checks a message the hub received for `sid` (`None` on a user's poke subject).
pub(super) fn accept(
    kind: Kind,
    origin: Origin,
    sid: Option<Uuid>,
    payload: &[u8],
) -> Option<Accepted<'_>> {
    match check(kind, origin, payload) {
        Ok(accepted) => Some(accepted),
        Err(reason) => {
            reject(kind.label(), reason, sid);
            None
        }
    }
}

/// The history id a nudge or speaker event carries (`Inside-Event-Id`): `Ok(None)` without
/// one (no history kept), `Err` (rejected) when it is not a number.
pub(super) fn event_id(kind: Kind, sid: Uuid, msg: &BusMessage) -> Result<Option<u64>, ()> {
    match msg.header(EVENT_ID_HEADER).map(str::parse::<u64>) {
        None => Ok(None),
        Some(Ok(id)) => Ok(Some(id)),
        Some(Err(_)) => {
            reject(kind.label(), "headers", Some(sid));
            Err(())
        }
    }
}

/// A poke's ids per session (`Inside-Session-Event-Ids: <sid>:<id>,…`); `Err` (rejected)
/// when malformed.
pub(super) fn session_event_ids(msg: &BusMessage) -> Result<Vec<(Uuid, u64)>, ()> {
    let Some(value) = msg.header(SESSION_EVENT_IDS_HEADER) else {
        return Ok(Vec::new());
    };
    let parsed = value
        .split(',')
        .map(|pair| {
            let (sid, id) = pair.split_once(':')?;
            Some((sid.parse().ok()?, id.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>();
    parsed.ok_or_else(|| reject(Kind::Pokes.label(), "headers", None))
}

/// A history entry being replayed, checked as it was on the bus: its JSON, or `None`
/// (dropped and counted) when it does not pass.
pub(super) fn recheck(kind: HistoryKind, sid: Uuid, payload: &[u8]) -> Option<String> {
    let kind = match kind {
        HistoryKind::Nudge => Kind::Nudges,
        HistoryKind::Speaker => Kind::Speakers,
        HistoryKind::Poke => Kind::Pokes,
    };
    match accept(kind, Origin::Bus, Some(sid), payload)? {
        Accepted::Json(json) => Some(json.into_owned()),
        Accepted::State(_) => None,
    }
}

fn check(kind: Kind, origin: Origin, payload: &[u8]) -> Result<Accepted<'_>, &'static str> {
    if payload.len() > MAX_JSON_PAYLOAD {
        return Err("too_large");
    }
    if origin == Origin::Process && matches!(kind, Kind::Nudges | Kind::Speakers) {
        // encoded by this process from its own types: JSON already
        return std::str::from_utf8(payload)
            .map(|json| Accepted::Json(Cow::Borrowed(json)))
            .map_err(|_| "malformed");
    }
    match kind {
        Kind::Nudges => {
            let n: Nudge = parse(payload)?;
            if !(1..=3).contains(&n.intensity) {
                return Err("out_of_range");
            }
            text_ok(&n.message, MAX_NUDGE_MESSAGE, false)?;
            encode(&n)
        }
        Kind::Speakers => {
            let s: SpeakerSegment = parse(payload)?;
            if !s.score.is_finite()
                || !(-1.0..=1.0).contains(&s.score)
                || s.start_ms < 0
                || s.end_ms < s.start_ms
            {
                return Err("out_of_range");
            }
            encode(&s)
        }
        Kind::Pokes => {
            let p: Poke = parse(payload)?;
            if let Some(m) = &p.message {
                text_ok(m, MAX_POKE_MESSAGE, true)?;
            }
            encode(&p)
        }
        Kind::State => {
            let e: StateEvent = parse(payload)?;
            if let StateEvent::Presence { participants, .. } = &e {
                if participants.len() > MAX_PARTICIPANTS {
                    return Err("out_of_range");
                }
            }
            Ok(Accepted::State(e))
        }
    }
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, &'static str> {
    serde_json::from_slice(payload).map_err(|_| "malformed")
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Accepted<'static>, &'static str> {
    serde_json::to_string(value)
        .map(|json| Accepted::Json(Cow::Owned(json)))
        .map_err(|_| "malformed")
}

/// At most `max` characters, no control characters (line breaks only where `lines`).
fn text_ok(text: &str, max: usize, lines: bool) -> Result<(), &'static str> {
    if text.chars().count() > max {
        return Err("too_large");
    }
    let bad = |c: char| c.is_control() && !(lines && (c == '\n' || c == '\t'));
    if text.chars().any(bad) {
        return Err("control_characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(kind: Kind, payload: &str) -> &'static str {
        match check(kind, Origin::Bus, payload.as_bytes()) {
            Ok(_) => "accepted",
            Err(r) => r,
        }
    }

    #[test]
    fn a_well_formed_nudge_is_re_encoded_without_unknown_fields() {
        let forged = r#"{"nudge_type":"SLOW_DOWN","intensity":2,"message":"Try slowing down","frame_seq":1,"frame_timestamp_ms":5,"html":"<b>x</b>"}"#;
        match check(Kind::Nudges, Origin::Bus, forged.as_bytes()) {
            Ok(Accepted::Json(json)) => assert!(!json.contains("html"), "{json}"),
            _ => panic!("a valid nudge was refused"),
        }
    }

    #[test]
    fn malformed_oversized_and_out_of_range_messages_are_refused() {
        assert_eq!(reason(Kind::Nudges, "not json"), "malformed");
        assert_eq!(
            reason(
                Kind::Nudges,
                r#"{"nudge_type":"PAY_NOW","intensity":1,"message":"x","frame_seq":null,"frame_timestamp_ms":null}"#
            ),
            "malformed"
        );
        assert_eq!(
            reason(
                Kind::Nudges,
                r#"{"nudge_type":"SLOW_DOWN","intensity":9,"message":"x","frame_seq":null,"frame_timestamp_ms":null}"#
            ),
            "out_of_range"
        );
        assert_eq!(
            reason(Kind::Nudges, "{\"nudge_type\":\"SLOW_DOWN\",\"intensity\":1,\"message\":\"a\\u001bb\",\"frame_seq\":null,\"frame_timestamp_ms\":null}"),
            "control_characters"
        );
        let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_JSON_PAYLOAD));
        assert_eq!(reason(Kind::State, &huge), "too_large");
        assert_eq!(
            reason(
                Kind::Speakers,
                r#"{"user_id":null,"score":7.0,"start_ms":0,"end_ms":1}"#
            ),
            "out_of_range"
        );
        assert_eq!(
            reason(
                Kind::Speakers,
                r#"{"user_id":null,"score":0.5,"start_ms":0,"end_ms":1500}"#
            ),
            "accepted"
        );
        assert_eq!(reason(Kind::State, r#"{"event":"finalized"}"#), "accepted");
        assert_eq!(reason(Kind::State, r#"{"event":"explode"}"#), "malformed");
    }

    #[test]
    fn the_process_own_nudges_pass_as_encoded_and_the_bus_ones_are_rechecked() {
        let forged = r#"{"nudge_type":"SLOW_DOWN","intensity":2,"message":"m","frame_seq":1,"frame_timestamp_ms":5,"html":"<b>x</b>"}"#;
        let json = |origin| match accept(Kind::Nudges, origin, None, forged.as_bytes()) {
            Some(Accepted::Json(json)) => json.into_owned(),
            _ => panic!("refused"),
        };
        assert_eq!(json(Origin::Process), forged);
        assert!(!json(Origin::Bus).contains("html"));
        // size and encoding hold whatever the origin; state events are always parsed
        let huge = "x".repeat(MAX_JSON_PAYLOAD + 1);
        assert!(accept(Kind::Nudges, Origin::Process, None, huge.as_bytes()).is_none());
        assert!(accept(Kind::Speakers, Origin::Process, None, &[0xff, 0xfe]).is_none());
        assert!(accept(Kind::State, Origin::Process, None, b"{}").is_none());
    }

    fn with_header(name: &'static str, value: &str) -> BusMessage {
        BusMessage {
            subject: "x".into(),
            payload: bytes::Bytes::new(),
            headers: Some(inside_bus::header_map([(name, value.to_string())])),
            reply: None,
        }
    }

    #[test]
    fn event_ids_come_from_headers_and_a_malformed_one_is_refused() {
        let sid = Uuid::new_v4();
        let plain = BusMessage {
            headers: None,
            ..with_header("x", "")
        };
        assert_eq!(event_id(Kind::Nudges, sid, &plain), Ok(None));
        assert_eq!(
            event_id(Kind::Nudges, sid, &with_header(EVENT_ID_HEADER, "42")),
            Ok(Some(42))
        );
        assert!(event_id(Kind::Speakers, sid, &with_header(EVENT_ID_HEADER, "-1")).is_err());

        let other = Uuid::new_v4();
        let ids = with_header(SESSION_EVENT_IDS_HEADER, &format!("{sid}:7,{other}:3"));
        assert_eq!(session_event_ids(&ids), Ok(vec![(sid, 7), (other, 3)]));
        assert_eq!(session_event_ids(&plain), Ok(vec![]));
        for bad in ["7", &format!("{sid}:x"), &format!("{sid}:7,"), "nope:1"] {
            assert!(
                session_event_ids(&with_header(SESSION_EVENT_IDS_HEADER, bad)).is_err(),
                "{bad}"
            );
        }
    }
}
