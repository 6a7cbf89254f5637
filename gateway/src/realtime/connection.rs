//! One WebSocket connection: a send side (queued server messages, heartbeat
//! pings, idle timeout) and a receive side (client messages, per-connection
//! budgets) raced under `select!` in one task with the access token's expiry;
//! whichever ends first ends the connection, and leaving the hub is the
//! membership's drop. What the socket published is counted for the report's barrier
//! ([`SocketTally`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use inside_schemas::{server_now_ms, server_now_us};
use uuid::Uuid;

use super::audio::{AudioRoute, AudioUplink};
use super::budget::Budget;
use super::caps::SocketSlot;
use super::consent::require_consent;
use super::frame_seqs::FrameSeqs;
use super::hub::Membership;
use super::presence::{CLOSE_FINALIZED, CLOSE_REVOKED};
use super::protocol::{self, BadMessage, ClientMessage};
use super::resume;
use super::send_queue::{Outbound, SendQueue};
use super::tally::{Opened, SocketTally};
use crate::state::AppState;

/// Messages per second a connection may send, sustained, and its burst.
const MESSAGE_RATE: f64 = 2_000.0;
const MESSAGE_BURST: f64 = 4_000.0;
/// Bad messages tolerated: a burst of 10, one more every 5 s.
const BAD_RATE: f64 = 0.2;
const BAD_BURST: f64 = 10.0;
/// Time allowed to write a close frame to a peer that may not be reading.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Close code for a socket whose access token expired (API.md).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;

/// How a connection ends.
#[derive(Debug)]
enum Ending {
    /// Send this close frame.
    Close(u16, &'static str),
    /// The peer went away; nothing to send.
    Gone,
}

pub struct Connection {
    pub state: AppState,
    pub sid: Uuid,
    pub uid: Uuid,
    /// The session's relationship, whose consent is checked again once joined.
    pub rid: Uuid,
    /// The access token's `exp` (Unix seconds): the socket closes with 4401 then.
    pub expires_at: i64,
    /// `?since=<event_id>`: the socket reconnects and gets what it missed after it.
    pub since: Option<u64>,
    /// This socket's place under the per-user and per-client caps.
    pub _slot: SocketSlot,
}

impl Connection {
    /// Serves the socket until it ends; a finalized session's socket (`active` false) is
    /// closed with 4409 at once.
    ///
    /// Not `async`: an async fn's future keeps its arguments for its whole life, and this
    /// one lives as long as the socket, so the socket is split into its two halves first.
    pub fn run(self, socket: WebSocket, active: bool) -> impl Future<Output = ()> + Send {
        let (sink, stream) = socket.split();
        self.serve(sink, stream, active)
    }

    async fn serve(
        self,
        mut sink: SplitSink<WebSocket, Message>,
        mut stream: SplitStream<WebSocket>,
        active: bool,
    ) {
        if !active {
            Box::pin(close(&mut sink, CLOSE_FINALIZED, "session finalized")).await;
            return;
        }
        // boxed: the join's futures would otherwise stay part of every idle socket's task
        let membership = match Box::pin(self.state.hub.join(self.sid, self.uid)).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(sid = %self.sid, error = %e, "socket could not join the hub");
                Box::pin(close(&mut sink, 1011, "bus unavailable")).await;
                return;
            }
        };
        // Checked again now that the session's state subject is live: a withdrawal that
        // landed between the upgrade's check and the join is seen here, a later one there.
        if let Err(e) = Box::pin(require_consent(&self.state, self.rid, self.uid)).await {
            let (code, reason) = match e {
                crate::error::ApiError::Forbidden(..) => (CLOSE_REVOKED, "consent withdrawn"),
                _ => (1011, "consent could not be checked"),
            };
            Box::pin(close(&mut sink, code, reason)).await;
            return;
        }
        let tally = match Box::pin(SocketTally::open(&self.state, self.sid, self.uid)).await {
            Ok(Opened::Open(tally)) => tally,
            Ok(Opened::Finalized) => {
                Box::pin(close(&mut sink, CLOSE_FINALIZED, "session finalized")).await;
                return;
            }
            Err(e) => {
                tracing::warn!(sid = %self.sid, error = %e, "recording the socket failed");
                Box::pin(close(&mut sink, 1011, "database unavailable")).await;
                return;
            }
        };
        Box::pin(self.state.research.warm(self.sid)).await;
        let greeting = resume::greet(&self.state, self.sid, self.uid, self.since, &mut sink);
        let Some(greeted) = Box::pin(greeting).await else {
            return;
        };
        tracing::info!(sid = %self.sid, uid = %self.uid, "socket joined");
        let started = Instant::now();
        let last_seen = AtomicU64::new(0);
        let kill = membership.kill.clone();
        let revoked = membership.revoked.clone();
        let expiry = token_expiry(self.expires_at);
        let ending = tokio::select! {
            e = self.send_side(&mut sink, &membership.queue, started, &last_seen, greeted.skip_through) => e,
            e = self.receive_side(&mut stream, &membership, &tally, started, &last_seen, &greeted.frames) => e,
            _ = kill.cancelled() => Ending::Close(1013, "send queue full or server stopping"),
            // before the queue drains: nothing more of theirs is read or published
            _ = revoked.cancelled() => Ending::Close(CLOSE_REVOKED, "consent withdrawn"),
            _ = tokio::time::sleep_until(expiry) => Ending::Close(CLOSE_TOKEN_EXPIRED, "access token expired"),
        };
        // nothing more is read: the counts are final once the audio decoder is done
        Box::pin(tally.close()).await;
        if let Ending::Close(code, reason) = ending {
            Box::pin(close(&mut sink, code, reason)).await;
        }
        tracing::info!(sid = %self.sid, uid = %self.uid, ?ending, "socket left");
        drop(membership);
    }

    async fn send_side(
        &self,
        sink: &mut SplitSink<WebSocket, Message>,
        queue: &SendQueue,
        started: Instant,
        last_seen: &AtomicU64,
        skip_through: u64,
    ) -> Ending {
        let settings = &self.state.settings;
        let every = Duration::from_secs_f64(settings.websocket_heartbeat_interval.max(0.01));
        let timeout = Duration::from_secs_f64(settings.websocket_timeout.max(0.01));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Checks for silence at least as often as the timeout needs.
        let mut idle_check = tokio::time::interval(timeout.min(every) / 2);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                open = queue.take_all(&mut batch) => {
                    // what was queued together goes out in one flush
                    for msg in batch.drain(..) {
                        if msg.replayed(skip_through) {
                            continue;
                        }
                        if let Some(end) = feed(sink, msg).await {
                            return end;
                        }
                    }
                    if sink.flush().await.is_err() || !open {
                        return Ending::Gone;
                    }
                }
                _ = heartbeat.tick() => {
                    if Box::pin(sink.send(Message::Ping(Bytes::new()))).await.is_err() {
                        return Ending::Gone;
                    }
                }
                _ = idle_check.tick() => {
                    let silent = started.elapsed().saturating_sub(Duration::from_millis(last_seen.load(Ordering::Relaxed)));
                    if silent > timeout {
                        return Ending::Close(1001, "idle timeout");
                    }
                }
            }
        }
    }

    async fn receive_side(
        &self,
        stream: &mut SplitStream<WebSocket>,
        membership: &Membership,
        tally: &SocketTally,
        started: Instant,
        last_seen: &AtomicU64,
        frames: &FrameSeqs,
    ) -> Ending {
        let queue = &membership.queue;
        let bus = self.state.hub.bus();
        let frames_subject = bus.subjects().frames(self.sid, self.uid);
        let mut budget = Budget::new(MESSAGE_RATE, MESSAGE_BURST);
        let mut bad_budget = Budget::new(BAD_RATE, BAD_BURST);
        let reply = |text: String| queue.push(Outbound::Text(Utf8Bytes::from(text))).is_ok();
        let mut audio = AudioState::Off;
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) if is_over_capacity(&e) => {
                    metrics::counter!("inside_ws_oversized_closed_total").increment(1);
                    return Ending::Close(1009, "message over the size limit");
                }
                Err(_) => return Ending::Gone,
            };
            last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let handling = Instant::now();
            let outcome = match &msg {
                Message::Text(text) => {
                    if !budget.take() {
                        metrics::counter!("inside_ws_flood_closed_total").increment(1);
                        return Ending::Close(1008, "message rate over the connection budget");
                    }
                    match protocol::parse(text.as_str()) {
                        Ok(ClientMessage::FeatureFrame(frame, raw)) => {
                            let payload = Bytes::from(raw.stamped(server_now_ms()));
                            Box::pin(self.state.research.copy_frame(self.sid, self.uid, &payload))
                                .await;
                            // boxed, as the awaits below: every await's future is part of
                            // the connection task, which every idle socket holds
                            // when it was accepted, for the frame→nudge latency
                            let received = inside_bus::header_map([(
                                inside_bus::FRAME_RECEIVED_US_HEADER,
                                inside_bus::ToCompactString::to_compact_string(&server_now_us()),
                            )]);
                            let publish = Box::pin(bus.publish_with_headers(
                                frames_subject.clone(),
                                received,
                                payload,
                            ));
                            if let Err(e) = publish.await {
                                tracing::warn!(sid = %self.sid, error = %e, "publishing a frame failed");
                                return Ending::Close(1011, "bus unavailable");
                            }
                            tally.frame();
                            self.state.hub.frame_published();
                            frames.accepted(frame.seq);
                            Ok(())
                        }
                        Ok(ClientMessage::Ping) => {
                            if !reply(protocol::pong(self.sid, frames.last())) {
                                return Ending::Close(1013, "send queue full");
                            }
                            Ok(())
                        }
                        Ok(ClientMessage::AudioStart(params)) => {
                            // nobody would attribute it: this process has no model, or (NATS)
                            // no worker with one answers
                            if !Box::pin(self.state.speakers.available()).await {
                                Err(BadMessage::AudioUnavailable)
                            } else {
                                // A running stream ends (and flushes) before the new one.
                                let route = AudioRoute {
                                    bus: bus.clone(),
                                    sid: self.sid,
                                    uid: self.uid,
                                    research: self.state.research.clone(),
                                    revoked: membership.revoked.clone(),
                                    tally: tally.audio(),
                                };
                                audio = AudioState::On(AudioUplink::start(
                                    route,
                                    params,
                                    self.state.settings.max_audio_seconds,
                                    queue.clone(),
                                ));
                                Ok(())
                            }
                        }
                        Ok(ClientMessage::AudioStop) => {
                            audio = AudioState::Off;
                            Ok(())
                        }
                        Err(bad) => Err(bad),
                    }
                }
                Message::Binary(chunk) => {
                    if !budget.take() {
                        metrics::counter!("inside_ws_flood_closed_total").increment(1);
                        return Ending::Close(1008, "message rate over the connection budget");
                    }
                    match &audio {
                        AudioState::On(uplink) => {
                            if !Box::pin(uplink.push(chunk.clone())).await {
                                // The decoder refused the stream and said why.
                                audio = AudioState::Refused;
                            }
                            Ok(())
                        }
                        AudioState::Refused => Ok(()),
                        AudioState::Off => Err(BadMessage::UnexpectedBinary),
                    }
                }
                Message::Close(_) => return Ending::Gone,
                Message::Ping(_) | Message::Pong(_) => Ok(()),
            };
            if let Err(bad) = outcome {
                metrics::counter!("inside_ws_bad_messages_total", "code" => bad.code())
                    .increment(1);
                if !bad_budget.take() {
                    return Ending::Close(1008, "too many bad messages");
                }
                if !reply(protocol::error(self.sid, &bad)) {
                    return Ending::Close(1013, "send queue full");
                }
            }
            // a publish that waited for the worker pool held up reading, not the client
            budget.excuse(handling.elapsed());
        }
        Ending::Gone
    }
}

/// The socket's audio stream, between `client.audio_start` and `client.audio_stop`.
enum AudioState {
    Off,
    On(AudioUplink),
    /// Refused mid-stream (an error was sent): further binary frames are dropped quietly
    /// until the next start.
    Refused,
}

async fn feed(sink: &mut SplitSink<WebSocket, Message>, msg: Outbound) -> Option<Ending> {
    match msg {
        Outbound::Text(text) | Outbound::Event(_, text) => sink
            .feed(Message::Text(text))
            .await
            .err()
            .map(|_| Ending::Gone),
        Outbound::Close(code, reason) => Some(Ending::Close(code, reason)),
    }
}

/// When a token expiring at `exp` (Unix seconds) runs out, on the runtime's clock.
fn token_expiry(exp: i64) -> tokio::time::Instant {
    // bounded: our tokens live at most a day, and an Instant must not overflow
    let left_ms = exp
        .saturating_mul(1000)
        .saturating_sub(chrono::Utc::now().timestamp_millis())
        .clamp(0, 366 * 86_400_000);
    tokio::time::Instant::now() + Duration::from_millis(left_ms.unsigned_abs())
}

/// Whether the socket failed on a message or frame over the size limit (answered with
/// 1009), rather than the peer going away.
fn is_over_capacity(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// Sends a close frame, giving up quickly on a peer that is not reading.
pub async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = sink.send(frame).await;
        let _ = sink.close().await;
    })
    .await;
}
