//! `worker tap --session <sid>`: a researcher's live view of one session.
//! Subscribes to the session's research subjects (`inside.v1.research.frames|audio|speakers`),
//! which carry copies of its frames, audio segments and speaker events only while every member
//! agreed to research use; the internal subjects are not for researchers (the reference NATS
//! configuration lets a researcher read `*.v1.research.>` and nothing else). Prints each
//! message as one JSON line: `{"at_us", "kind", "user_id", "payload"}`. Audio segments print
//! their header metadata and size, not the samples. The tap ends when the session is
//! finalized (`inside.v1.research.state.<sid>`): a last line of kind `finalized`.

use futures::stream::{select_all, StreamExt};
use inside_bus::{last_uuid, sid_uid, Bus, BusMessage};
use inside_schemas::audio::now_us;
use inside_schemas::AudioSegmentMeta;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The subscriptions of one session's tap.
pub struct SessionTap {
    bus: Bus,
    subs: Vec<inside_bus::Subscription>,
}

/// How long the tap waits for the server to confirm its subscriptions.
const CONFIRM: std::time::Duration = std::time::Duration::from_secs(2);

/// Subscribes to the research copies of session `sid`; events published after this returns
/// are seen (when the identity may confirm it: see below).
pub async fn subscribe(bus: &Bus, sid: Uuid) -> Result<SessionTap, inside_bus::BusError> {
    let s = bus.subjects();
    let mut subs = Vec::new();
    for subject in [
        s.research_session_frames(sid),
        s.research_speakers(sid),
        s.research_session_derived(sid),
        s.research_session_audio(sid),
        s.research_state(sid),
    ] {
        subs.push(bus.subscribe(subject).await?);
    }
    // The confirmation is a message to the tap's own inbox; the read-only researcher identity may
    // publish nothing, so there it cannot arrive and the subscriptions are live a moment later.
    match tokio::time::timeout(CONFIRM, bus.flush()).await {
        Ok(Ok(())) => {}
        _ => tracing::info!(
            "subscriptions not confirmed by the server (a read-only identity?); tapping anyway"
        ),
    }
    Ok(SessionTap {
        bus: bus.clone(),
        subs,
    })
}

/// Why a tap stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapEnd {
    /// The session was finalized; its `finalized` line was the last one.
    Finalized,
    /// `shutdown` fired (Ctrl-C, SIGTERM).
    Shutdown,
    /// The bus closed the subscriptions.
    BusClosed,
}

/// How long a tap keeps printing after the finalize: the workers publish the speaker events
/// of the last audio segments after the gateways stopped reading the session.
pub const FINALIZE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

impl SessionTap {
    /// Calls `line` with each event until the session is finalized (then for `linger` more,
    /// the `finalized` line last), until `shutdown`, or until the bus closes.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        linger: std::time::Duration,
        mut line: impl FnMut(String),
    ) -> TapEnd {
        let mut all = select_all(self.subs);
        let mut finalized: Option<Value> = None;
        let until = tokio::time::sleep(std::time::Duration::MAX);
        tokio::pin!(until);
        loop {
            let msg = tokio::select! {
                m = all.next() => m,
                _ = shutdown.cancelled() => return TapEnd::Shutdown,
                _ = &mut until, if finalized.is_some() => {
                    if let Some(last) = finalized.take() {
                        line(last.to_string());
                    }
                    return TapEnd::Finalized;
                }
            };
            let Some(msg) = msg else {
                return match finalized.take() {
                    Some(last) => {
                        line(last.to_string());
                        TapEnd::Finalized
                    }
                    None => TapEnd::BusClosed,
                };
            };
            let event = render(&self.bus, &msg);
            if event["kind"] == "finalized" {
                // printed last, once what was still in flight has come in
                if finalized.is_none() {
                    until.as_mut().reset(tokio::time::Instant::now() + linger);
                    finalized = Some(event);
                }
                continue;
            }
            line(event.to_string());
        }
    }
}

/// One message as a JSON line.
pub fn render(bus: &Bus, msg: &BusMessage) -> Value {
    let prefix = format!("{}.v1.research.", bus.subjects().prefix());
    let kind = msg
        .subject
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split('.').next())
        .unwrap_or("unknown");
    let (kind, user_id) = match kind {
        "frames" => ("frame", sid_uid(&msg.subject).map(|(_, u)| u)),
        "audio" => ("audio", sid_uid(&msg.subject).map(|(_, u)| u)),
        "derived" => ("derived", sid_uid(&msg.subject).map(|(_, u)| u)),
        "speakers" => ("speaker", None),
        "state" => (state_kind(&msg.payload), None),
        _ => ("unknown", last_uuid(&msg.subject)),
    };
    let payload = if kind == "audio" {
        match AudioSegmentMeta::from_headers(|h| msg.header(h)) {
            Some(m) => json!({"seq": m.seq, "start_ms": m.start_ms, "end_ms": m.end_ms,
                "codec": m.codec, "bytes": msg.payload.len()}),
            None => json!({"bytes": msg.payload.len()}),
        }
    } else {
        serde_json::from_slice(&msg.payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&msg.payload).into_owned()))
    };
    let user_id = match kind {
        "speaker" => payload.get("user_id").cloned().unwrap_or(Value::Null),
        _ => user_id.map_or(Value::Null, |u| Value::String(u.to_string())),
    };
    json!({"at_us": now_us(), "kind": kind, "user_id": user_id, "payload": payload})
}

/// `finalized` for the finalize announcement; anything else on the state subject is unknown.
fn state_kind(payload: &[u8]) -> &'static str {
    match serde_json::from_slice::<inside_bus::StateEvent>(payload) {
        Ok(inside_bus::StateEvent::Finalized) => "finalized",
        _ => "unknown",
    }
}
