//! The way out for a nudge, whichever rule raised it: the per-(sid, uid)
//! rate limit shared by every worker, the publish to the user's nudge subject,
//! and the record for the report.

use std::time::Duration;

use inside_bus::Bus;
use inside_schemas::{EventBody, Nudge};
use inside_store::events::SessionEvent;
use inside_store::limiter::Limiter;
use uuid::Uuid;

use super::EventWriter;

#[derive(Clone)]
pub struct NudgeDelivery {
    bus: Bus,
    limiter: Limiter,
    writer: EventWriter,
    /// `None` when `NUDGE_RATE_LIMIT_SECONDS` is 0.
    window: Option<Duration>,
}

impl NudgeDelivery {
    pub fn new(bus: Bus, limiter: Limiter, writer: EventWriter, window: Option<Duration>) -> Self {
        Self {
            bus,
            limiter,
            writer,
            window,
        }
    }

    /// True when deciding whether a nudge may go out waits on the network (the limit is on
    /// and kept in Redis): a frame loop should not wait on that between frames.
    pub fn checks_remotely(&self) -> bool {
        self.window.is_some() && self.limiter.is_remote()
    }

    /// True when this process already knows a nudge to `uid` went out in the current window:
    /// the frame loop then drops the nudge at once instead of asking Redis (so with the limit
    /// on, only a frame that might nudge costs a round trip).
    pub fn known_limited(&self, sid: Uuid, uid: Uuid) -> bool {
        let limited = self.window.is_some() && self.limiter.taken_here(&Self::limit_key(sid, uid));
        if limited {
            metrics::counter!("inside_nudges_limited_total").increment(1);
        }
        limited
    }

    fn limit_key(sid: Uuid, uid: Uuid) -> String {
        format!("nudge:{sid}:{uid}")
    }

    /// Sends `nudge` to `uid` unless one already went out in this window, and records it.
    pub async fn deliver(&self, sid: Uuid, uid: Uuid, nudge: Nudge) {
        if let Some(sent) = self.publish(sid, uid, nudge).await {
            self.record(sid, uid, sent).await;
        }
    }

    /// Sends `nudge` to `uid` unless one already went out in this window; the nudge back
    /// when it went out, for the caller to [`record`](Self::record) once the phone has it
    /// on its way (recording first would put the writer's wakeup on the latency path).
    pub async fn publish(&self, sid: Uuid, uid: Uuid, nudge: Nudge) -> Option<Nudge> {
        if !self.allowed(sid, uid).await {
            return None;
        }
        let subject = self.bus.subjects().nudges(sid, uid);
        if let Err(e) = self.bus.publish_json(subject, &nudge).await {
            tracing::warn!(%sid, error = %e, "publishing a nudge failed");
            return None;
        }
        metrics::counter!("inside_nudges_total", "type" => nudge.nudge_type.as_str()).increment(1);
        Some(nudge)
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

    /// One nudge per (sid, uid) per window, across every worker.
    async fn allowed(&self, sid: Uuid, uid: Uuid) -> bool {
        let Some(window) = self.window else {
            return true;
        };
        match self
            .limiter
            .once_per(&Self::limit_key(sid, uid), window)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                metrics::counter!("inside_nudges_limited_total").increment(1);
                false
            }
            Err(e) => {
                // Better a missed nudge than a burst of them.
                tracing::warn!(error = %e, "nudge limiter unavailable; nudge skipped");
                false
            }
        }
    }
}
