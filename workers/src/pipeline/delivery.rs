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

    /// Sends `nudge` to `uid` unless one already went out in this window.
    pub async fn deliver(&self, sid: Uuid, uid: Uuid, nudge: Nudge) {
        if self.allowed(sid, uid).await {
            self.send(sid, uid, nudge).await;
        }
    }

    /// One nudge per (sid, uid) per window, across every worker.
    async fn allowed(&self, sid: Uuid, uid: Uuid) -> bool {
        let Some(window) = self.window else {
            return true;
        };
        match self
            .limiter
            .once_per(&format!("nudge:{sid}:{uid}"), window)
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

    async fn send(&self, sid: Uuid, uid: Uuid, nudge: Nudge) {
        let subject = self.bus.subjects().nudges(sid, uid);
        if let Err(e) = self.bus.publish_json(subject, &nudge).await {
            tracing::warn!(%sid, error = %e, "publishing a nudge failed");
            return;
        }
        metrics::counter!("inside_nudges_total", "type" => nudge.nudge_type.as_str()).increment(1);
        self.writer
            .record(SessionEvent {
                session_id: sid,
                user_id: Some(uid),
                body: EventBody::Nudge(nudge),
            })
            .await;
    }
}
