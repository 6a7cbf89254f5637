//! One consumer of feature frames: rules, nudge limit, publish, record.

use std::time::Duration;

use futures::StreamExt;
use inside_bus::{sid_uid, Bus, BusMessage, Subscription};
use inside_engine::NudgePolicy;
use inside_schemas::{EventBody, FeatureFrame, Nudge};
use inside_store::events::SessionEvent;
use inside_store::limiter::Limiter;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::EventWriter;

pub struct FrameConsumer {
    bus: Bus,
    limiter: Limiter,
    writer: EventWriter,
    policy: NudgePolicy,
    window: Option<Duration>,
}

impl FrameConsumer {
    pub fn new(
        bus: Bus,
        limiter: Limiter,
        writer: EventWriter,
        policy: NudgePolicy,
        window: Option<Duration>,
    ) -> Self {
        Self {
            bus,
            limiter,
            writer,
            policy,
            window,
        }
    }

    /// Handles frames until `shutdown`, then drains what the subscription
    /// still holds so a graceful stop loses nothing.
    pub async fn run(self, mut sub: Subscription, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                msg = sub.next() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => return,
                },
                _ = shutdown.cancelled() => break,
            }
        }
        sub.drain().await;
        while let Some(msg) = sub.next().await {
            self.handle(msg).await;
        }
    }

    async fn handle(&self, msg: BusMessage) {
        metrics::counter!("inside_frames_received_total").increment(1);
        let Some((sid, uid)) = sid_uid(&msg.subject) else {
            tracing::debug!(subject = %msg.subject, "frame on a subject without sid/uid");
            return;
        };
        let frame: FeatureFrame = match serde_json::from_slice(&msg.payload) {
            Ok(f) => f,
            Err(e) => {
                metrics::counter!("inside_frames_invalid_total").increment(1);
                tracing::debug!(%sid, error = %e, "undecodable frame dropped");
                return;
            }
        };
        let nudge = self.policy.evaluate(&frame);
        self.writer
            .record(SessionEvent {
                session_id: sid,
                user_id: Some(uid),
                body: EventBody::Frame(frame),
            })
            .await;
        metrics::counter!("inside_frames_processed_total").increment(1);
        if let Some(nudge) = nudge {
            if self.allowed(sid, uid).await {
                self.send(sid, uid, nudge).await;
            }
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
