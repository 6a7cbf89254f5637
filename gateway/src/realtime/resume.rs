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
use inside_schemas::{Joined, Resync, ServerMessageType};
use inside_store::event_log::{Replay, Snapshot};
use uuid::Uuid;

use super::frame_seqs::FrameSeqs;
use super::inbound;
use super::protocol;
use crate::state::AppState;

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
    let snapshot = match state.events.snapshot(sid, uid, since).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%sid, error = %e, "reading the session's event history failed");
            Snapshot {
                replay: since.map(|_| Replay::Gone { oldest: None }),
                ..Snapshot::default()
            }
        }
    };
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
            let resync = Resync {
                reason: "history_expired".into(),
                oldest_event_id: oldest,
                last_event_id: snapshot.head,
            };
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
        skip_through: snapshot.head.unwrap_or(0),
        frames: FrameSeqs::new(state.events.clone(), sid, uid, snapshot.last_frame_seq),
    })
}
