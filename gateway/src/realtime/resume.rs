//! The start of every socket: `server.joined` (the session's newest event id and the last
//! frame seq accepted for the user) and, for a socket that reconnects with
//! `?since=<event_id>`, what it missed, oldest first, or `server.resync` when the history no
//! longer holds it.
//!
//! The socket joins the hub (live events start queueing) before the history is read, and the
//! greeting is written straight to the socket before the send side starts: live events
//! queued meanwhile whose id the read covered (replayed, or declared lost) are skipped, so
//! nothing arrives twice and nothing falls between the replay and the live stream.

use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::stream::SplitSink;
use futures::SinkExt;
use inside_bus::history::Missed;
use inside_schemas::HistoryKind;
use inside_schemas::{Joined, Resync, ServerMessageType};
use inside_store::event_log::{LoggedEvent, Replay, Snapshot};
use uuid::Uuid;

use super::frame_seqs::FrameSeqs;
use super::inbound;
use super::protocol;
use crate::state::AppState;

/// The head and, with `since`, the replay from the events stream the hub follows; without
/// one (JetStream unavailable) no head, and `since` gets `server.resync`.
async fn from_stream(
    state: &AppState,
    sid: Uuid,
    uid: Uuid,
    since: Option<u64>,
) -> (Option<u64>, Option<Replay>) {
    let Some((stream, head)) = state.hub.event_stream() else {
        return (None, since.map(|_| Replay::Gone { oldest: None }));
    };
    let Some(since) = since else {
        return (Some(head), None);
    };
    let subjects = state.bus.subjects();
    let mine = [
        subjects.nudges(sid, uid),
        subjects.speakers(sid),
        subjects.pokes(uid),
    ];
    let replay = match stream.missed(&mine, since, head).await {
        Ok(Missed::Events(events)) => Replay::Complete(
            events
                .into_iter()
                .filter_map(|e| {
                    let kind = if e.msg.subject == mine[0] {
                        HistoryKind::Nudge
                    } else if e.msg.subject == mine[1] {
                        HistoryKind::Speaker
                    } else if e.msg.subject == mine[2] {
                        HistoryKind::Poke
                    } else {
                        return None;
                    };
                    Some(LoggedEvent {
                        id: e.id,
                        kind,
                        to: None,
                        payload: e.msg.payload,
                    })
                })
                .collect(),
        ),
        Ok(Missed::Gone { oldest }) => Replay::Gone { oldest },
        Err(e) => {
            tracing::warn!(%sid, error = %e, "reading the events stream failed");
            Replay::Gone { oldest: None }
        }
    };
    (Some(head), Some(replay))
}

/// What the connection keeps from its greeting.
pub(super) struct Greeted {
    /// Live events with an id up to this one were covered by the greeting.
    pub skip_through: u64,
    pub frames: FrameSeqs,
}

/// Greets the socket (see the module's doc); `None` when the peer did not take it.
pub(super) async fn greet(
    state: &AppState,
    sid: Uuid,
    uid: Uuid,
    since: Option<u64>,
    sink: &mut SplitSink<WebSocket, Message>,
) -> Option<Greeted> {
    let mut snapshot = match state.events.snapshot(sid, uid, since).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%sid, error = %e, "reading the session's event history failed");
            Snapshot {
                replay: since.map(|_| Replay::Gone { oldest: None }),
                ..Snapshot::default()
            }
        }
    };
    // the ids of events kept on the bus are the stream's: the head is what this gateway's
    // feed has handed out, so every later event reaches this (registered) socket live
    let mut skip_through = snapshot.head.unwrap_or(0);
    if state.events.is_on_bus() {
        let (head, replay) = from_stream(state, sid, uid, since).await;
        snapshot.head = head;
        snapshot.replay = replay;
        // a phone that saw ids this gateway's feed has not handled yet (it came from a
        // gateway further ahead) gets them live once, not twice
        skip_through = head.unwrap_or(0);
        if let (Some(since), Some(Replay::Complete(_))) = (since, &snapshot.replay) {
            skip_through = skip_through.max(since);
        }
    }
    let joined = Joined {
        sid,
        last_event_id: snapshot.head,
        last_frame_seq: snapshot.last_frame_seq,
    };
    let mut out = vec![protocol::server(ServerMessageType::Joined, sid, &joined)];
    match snapshot.replay {
        None => {}
        Some(Replay::Complete(events)) => {
            metrics::counter!("inside_ws_resumes_total", "outcome" => "replayed").increment(1);
            metrics::counter!("inside_ws_replayed_events_total").increment(events.len() as u64);
            out.extend(events.into_iter().filter_map(|e| {
                let json = inbound::recheck(e.kind, sid, &e.payload)?;
                Some(protocol::server_event(
                    e.kind.message_type(),
                    sid,
                    e.id,
                    &json,
                ))
            }));
        }
        Some(Replay::Gone { oldest }) => {
            metrics::counter!("inside_ws_resumes_total", "outcome" => "resync").increment(1);
            let resync = Resync::history_expired(oldest, snapshot.head);
            out.push(protocol::server(ServerMessageType::Resync, sid, &resync));
        }
    }
    // a peer that does not read gets as long as an idle one
    let limit = Duration::from_secs_f64(state.settings.websocket_timeout);
    let written = tokio::time::timeout(limit, async {
        for text in out {
            sink.feed(Message::Text(Utf8Bytes::from(text))).await?;
        }
        sink.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return None;
    }
    Some(Greeted {
        skip_through,
        frames: FrameSeqs::new(state.events.clone(), sid, uid, snapshot.last_frame_seq),
    })
}
