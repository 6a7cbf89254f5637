//! The way out for a nudge, whichever rule raised it: the per-(sid, uid)
//! rate limit shared by every worker, the append to the session's history (its event id, in
//! the embedded default; on NATS the events stream numbers it as it is published), the publish
//! to the user's nudge subject, and the record for the report. On NATS with the events stream
//! the stream judges the limit as it stores the nudge (`turns`); without it, Redis does, one
//! round trip before the publish.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use inside_bus::Bus;
use inside_schemas::{EventBody, FeatureFrame, HistoryKind, Nudge, NudgeType};
use inside_store::event_log::{EventLog, Once, Pending};
use inside_store::events::SessionEvent;
use inside_store::limiter::Limiter;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::turns::{NudgeTurns, Taken};
use super::EventWriter;

/// The most nudges asked about in one round trip.
const MAX_BATCH: usize = 256;
/// How long after the events stream stored a nudge its window is marked in the limiter.
const HOLD_AFTER: Duration = Duration::from_millis(50);

/// A nudge a frame raised, waiting for its limit and history, and the frame, recorded once
/// the nudge is decided (and recorded, if it went out).
pub struct Raised {
    pub sid: Uuid,
    pub uid: Uuid,
    pub nudge: Nudge,
    /// When the gateway accepted the frame that raised it.
    pub frame_received_us: Option<i64>,
    pub frame: FeatureFrame,
    /// Already published in its turn (the limit kept by the events stream), the stream's
    /// answer to come.
    pub taken: Option<Taken>,
}

#[derive(Clone)]
pub struct NudgeDelivery {
    bus: Bus,
    limiter: Limiter,
    events: EventLog,
    writer: EventWriter,
    /// `None` when `NUDGE_RATE_LIMIT_SECONDS` is 0.
    window: Option<Duration>,
    /// The limit kept by the events stream instead of `limiter` (NATS with a resume window).
    turns: Option<Arc<NudgeTurns>>,
    /// `inside_nudges_total` of each of `NudgeType::ALL`, looked up in the recorder once
    /// rather than per nudge (so made after it is installed).
    sent: [metrics::Counter; NudgeType::ALL.len()],
}

impl NudgeDelivery {
    pub fn new(
        bus: Bus,
        limiter: Limiter,
        events: EventLog,
        writer: EventWriter,
        window: Option<Duration>,
    ) -> Self {
        Self {
            bus,
            limiter,
            events,
            writer,
            window,
            turns: None,
            sent: NudgeType::ALL
                .map(|t| metrics::counter!("inside_nudges_total", "type" => t.as_str())),
        }
    }

    /// Has the events stream judge the nudge limit (see `turns`); the limiter then only
    /// hears of the windows taken, for workers that still ask it.
    pub fn with_turns(mut self, turns: NudgeTurns) -> Self {
        if self.window.is_some() {
            self.turns = Some(Arc::new(turns));
        }
        self
    }

    /// True when the limit is kept by the events stream.
    pub fn takes_turns(&self) -> bool {
        self.turns.is_some()
    }

    /// True when sending a nudge waits on the network (the limit kept in Redis, or the events
    /// stream's answer): a frame loop should not wait on that between frames.
    pub fn checks_remotely(&self) -> bool {
        self.window.is_some() && (self.turns.is_some() || self.limiter.is_remote())
    }

    /// Starts `r` on its way: with the events stream judging the limit, publishes its nudge
    /// now if the member's window is over as far as this process knows, for the delivery
    /// task to wait for the stream's answer; with Redis, leaves the check to the delivery
    /// task (the caller has asked [`known_limited`](Self::known_limited)). False when it is
    /// known not to go out.
    pub async fn start(&self, r: &mut Raised) -> bool {
        let Some(turns) = &self.turns else {
            return true;
        };
        let Some(payload) = encode(r.sid, &r.nudge) else {
            return false;
        };
        r.taken = self
            .publish_in_turn(turns, r.sid, r.uid, payload, r.frame_received_us)
            .await;
        if r.taken.is_none() {
            metrics::counter!("inside_nudges_limited_total").increment(1);
        }
        r.taken.is_some()
    }

    /// The session histories nudges are appended to (speaker events go there too).
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// True when this process already knows a nudge to `uid` went out in the current window:
    /// the frame loop then drops the nudge at once instead of asking Redis (so with the limit
    /// on, only a frame that might nudge costs a round trip).
    pub fn known_limited(&self, sid: Uuid, uid: Uuid) -> bool {
        let limited = self.window.is_some()
            && match &self.turns {
                Some(turns) => turns.limited_here(sid, uid),
                None => self.limiter.taken_here(&Self::limit_key(sid, uid)),
            };
        if limited {
            metrics::counter!("inside_nudges_limited_total").increment(1);
        }
        limited
    }

    fn limit_key(sid: Uuid, uid: Uuid) -> String {
        format!("nudge:{sid}:{uid}")
    }

    /// Sends `nudge` to `uid` unless one already went out in this window, and records it.
    pub async fn deliver(
        &self,
        sid: Uuid,
        uid: Uuid,
        nudge: Nudge,
        frame_received_us: Option<i64>,
    ) {
        if let Some(sent) = self.publish(sid, uid, nudge, frame_received_us).await {
            self.record(sid, uid, sent).await;
        }
    }

    /// Sends `nudge` to `uid` unless one already went out in this window; the nudge back
    /// when it went out, for the caller to [`record`](Self::record) once the phone has it
    /// on its way (recording first would put the writer's wakeup on the latency path).
    /// `frame_received_us`: when the gateway accepted the frame that caused it, if one did.
    pub async fn publish(
        &self,
        sid: Uuid,
        uid: Uuid,
        nudge: Nudge,
        frame_received_us: Option<i64>,
    ) -> Option<Nudge> {
        let payload = encode(sid, &nudge)?;
        if let Some(turns) = &self.turns {
            let taken = self
                .publish_in_turn(turns, sid, uid, payload, frame_received_us)
                .await?;
            turns.settle(sid, uid, taken).await?;
            self.stored(sid, uid, &nudge);
            return Some(nudge);
        }
        let id = self.append(sid, uid, &payload).await?;
        self.send(sid, uid, id, frame_received_us, payload, &nudge)
            .await
            .then_some(nudge)
    }

    async fn send(
        &self,
        sid: Uuid,
        uid: Uuid,
        id: Option<u64>,
        frame_received_us: Option<i64>,
        payload: Bytes,
        nudge: &Nudge,
    ) -> bool {
        let subject = self.bus.subjects().nudges(sid, uid);
        let publish = self
            .bus
            .publish_nudge(subject, id, frame_received_us, payload);
        if let Err(e) = publish.await {
            tracing::warn!(%sid, error = %e, "publishing a nudge failed");
            return false;
        }
        self.count_sent(nudge);
        true
    }

    fn count_sent(&self, nudge: &Nudge) {
        if let Some(i) = NudgeType::ALL.iter().position(|t| *t == nudge.nudge_type) {
            self.sent[i].increment(1);
        }
    }

    /// Publishes a nudge's `payload` to `uid` if it is the member's turn (see `turns`).
    async fn publish_in_turn(
        &self,
        turns: &NudgeTurns,
        sid: Uuid,
        uid: Uuid,
        payload: Bytes,
        frame_received_us: Option<i64>,
    ) -> Option<Taken> {
        let subject = self.bus.subjects().nudges(sid, uid);
        let headers = inside_bus::nudge_headers(None, frame_received_us);
        turns.publish(sid, uid, subject, headers, payload).await
    }

    /// Counts a nudge the events stream stored, and soon marks `uid`'s window taken in the
    /// limiter, for workers that ask it rather than the stream (an older release). Not at
    /// once: the stream's answer comes while the nudge is on its way to the phone, and a Redis
    /// round trip then (two more wake-ups on a busy machine) cost that nudge about 120 µs at
    /// p50 (`docs/benchmarks/2026-12-07-nudge-turns.md`).
    fn stored(&self, sid: Uuid, uid: Uuid, nudge: &Nudge) {
        self.count_sent(nudge);
        let Some(window) = self.window else { return };
        let (limiter, key) = (self.limiter.clone(), Self::limit_key(sid, uid));
        tokio::spawn(async move {
            tokio::time::sleep(HOLD_AFTER).await;
            if let Err(e) = limiter.hold(&key, window).await {
                tracing::debug!(%sid, error = %e, "marking a nudge window taken in the limiter");
            }
        });
    }

    /// Delivers the nudges `raised` yields until every sender is gone, the ones that queued
    /// up while the previous limit checks were out together: one nudge alone goes at once,
    /// and a window this process learned is taken meanwhile costs the next ones nothing.
    pub async fn deliver_raised(self, mut raised: mpsc::Receiver<Raised>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while raised.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.deliver_many(&mut batch).await;
        }
    }

    async fn deliver_many(&self, batch: &mut Vec<Raised>) {
        let mut raised = std::mem::take(batch);
        let went = match &self.turns {
            Some(turns) => self.settle_many(turns, &mut raised).await,
            None => self.send_many(&raised).await,
        };
        // every phone of the batch has its nudge on the way: now the report's side
        for (r, went) in raised.into_iter().zip(went) {
            self.record_frame(r.sid, r.uid, r.frame, went.then_some(r.nudge))
                .await;
        }
    }

    /// Waits for the stream's answer to every nudge of `raised` (each published in its turn by
    /// [`start`](Self::start)); whether each went out.
    async fn settle_many(&self, turns: &NudgeTurns, raised: &mut [Raised]) -> Vec<bool> {
        let mut went = Vec::with_capacity(raised.len());
        for r in raised.iter_mut() {
            let stored = match r.taken.take() {
                Some(taken) => turns.settle(r.sid, r.uid, taken).await.is_some(),
                None => false,
            };
            if stored {
                self.stored(r.sid, r.uid, &r.nudge);
            } else {
                metrics::counter!("inside_nudges_limited_total").increment(1);
            }
            went.push(stored);
        }
        went
    }

    /// Asks the limit and history of every nudge of `raised` in one round trip and sends
    /// those let out; whether each went out.
    async fn send_many(&self, raised: &[Raised]) -> Vec<bool> {
        let mut went = vec![false; raised.len()];
        let (index, pending): (Vec<usize>, Vec<Pending>) = raised
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let pending = Pending {
                    sid: r.sid,
                    to: Some(r.uid),
                    kind: HistoryKind::Nudge,
                    payload: encode(r.sid, &r.nudge)?,
                    once: self.window.map(|w| (Self::limit_key(r.sid, r.uid), w)),
                };
                Some((i, pending))
            })
            .unzip();
        let outcomes = match self.events.append_many(&self.limiter, &pending).await {
            Ok(outcomes) => outcomes,
            // as one at a time: better a missed nudge than a burst of them
            Err(e) if self.window.is_some() => {
                tracing::warn!(error = %e, skipped = pending.len(), "nudge limiter unavailable; nudges skipped");
                return went;
            }
            // the phones still get them live; only a resume would miss them
            Err(e) => {
                tracing::warn!(error = %e, "event history unavailable; nudges sent without an id");
                vec![Once::Sent(None); pending.len()]
            }
        };
        for ((i, p), outcome) in index.into_iter().zip(pending).zip(outcomes) {
            let r = &raised[i];
            match outcome {
                Once::Limited => {
                    metrics::counter!("inside_nudges_limited_total").increment(1);
                }
                Once::Sent(id) => {
                    went[i] = self
                        .send(r.sid, r.uid, id, r.frame_received_us, p.payload, &r.nudge)
                        .await;
                }
            }
        }
        went
    }

    /// Records a nudge that went out, for the report.
    pub async fn record(&self, sid: Uuid, uid: Uuid, nudge: Nudge) {
        self.writer
            .record(SessionEvent {
                session_id: sid,
                user_id: Some(uid),
                body: EventBody::Nudge(nudge),
            })
            .await;
    }

    /// Records a frame for the report, after the nudge it raised when that went out: once the
    /// frame is recorded the report may be written, and the writer keeps the order it is
    /// handed events in.
    pub async fn record_frame(
        &self,
        sid: Uuid,
        uid: Uuid,
        frame: FeatureFrame,
        sent: Option<Nudge>,
    ) {
        if let Some(nudge) = sent {
            self.record(sid, uid, nudge).await;
        }
        self.writer
            .record(SessionEvent {
                session_id: sid,
                user_id: Some(uid),
                body: EventBody::Frame(frame),
            })
            .await;
    }

    /// One nudge per (sid, uid) per window, across every worker, appended to the session's
    /// history when allowed: `None` when it may not go out, else its event id (if any).
    async fn append(&self, sid: Uuid, uid: Uuid, payload: &Bytes) -> Option<Option<u64>> {
        let Some(window) = self.window else {
            return match self
                .events
                .append(sid, Some(uid), HistoryKind::Nudge, payload)
                .await
            {
                Ok(id) => Some(id),
                Err(e) => {
                    // the phone still gets it live; only a resume would miss it
                    tracing::warn!(%sid, error = %e, "event history unavailable; nudge sent without an id");
                    Some(None)
                }
            };
        };
        match self
            .events
            .append_once(
                &self.limiter,
                &Self::limit_key(sid, uid),
                window,
                sid,
                Some(uid),
                HistoryKind::Nudge,
                payload.clone(),
            )
            .await
        {
            Ok(Once::Sent(id)) => Some(id),
            Ok(Once::Limited) => {
                metrics::counter!("inside_nudges_limited_total").increment(1);
                None
            }
            Err(e) => {
                // Better a missed nudge than a burst of them.
                tracing::warn!(error = %e, "nudge limiter unavailable; nudge skipped");
                None
            }
        }
    }
}

/// A nudge's JSON payload, as every gateway and the history hold it.
fn encode(sid: Uuid, nudge: &Nudge) -> Option<Bytes> {
    // room for the engine's sentences, so the buffer is not grown (and copied) field by field
    let mut json = Vec::with_capacity(128 + nudge.message.len());
    match serde_json::to_writer(&mut json, nudge) {
        // without spare room (the shrink usually stays in its allocation's size class): a
        // payload made from a buffer with room keeps its shared count in a second allocation,
        // which the thread that drops it must fetch
        Ok(()) => Some(Bytes::from(json.into_boxed_slice())),
        Err(e) => {
            tracing::warn!(%sid, error = %e, "encoding a nudge failed");
            None
        }
    }
}
