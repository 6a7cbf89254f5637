//! The way out for derived conversation features: each hop's [`DerivedFrame`] published on
//! `{prefix}.v1.derived.<sid>.<uid>` (and its research copy while every member agreed), judged
//! by the same `NudgePolicy` as a client's feature frames and sent through the same
//! [`NudgeDelivery`] (so the same per-(session, member) nudge window covers both), and one
//! [`inside_schemas::DerivedRecord`] per member and batch recorded for the report.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use inside_bus::Bus;
use inside_engine::conversation::ConversationConfig;
use inside_engine::NudgePolicy;
use inside_schemas::EventBody;
use inside_store::events::SessionEvent;
use inside_store::SessionDirectory;
use uuid::Uuid;

use super::derived::{Derived, DerivedSessions, SegmentAudio};
use super::{EventWriter, NudgeDelivery};

/// The derived analyses of this process's sessions, shared by its audio consumer and the
/// blocking tasks it runs them on.
#[derive(Clone)]
pub struct DerivedAnalysis {
    sessions: Arc<Mutex<DerivedSessions>>,
}

impl Default for DerivedAnalysis {
    fn default() -> Self {
        Self {
            sessions: Arc::new(Mutex::new(DerivedSessions::new(
                ConversationConfig::default(),
            ))),
        }
    }
}

impl DerivedAnalysis {
    /// Feeds a batch of segments, in order (CPU work: call it off the async runtime).
    pub fn feed<'a>(&self, segments: impl Iterator<Item = Option<SegmentAudio<'a>>>) -> Derived {
        // a panic elsewhere while holding it leaves consistent maps: carry on with them
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = Derived::default();
        for seg in segments {
            let Some(seg) = seg else {
                metrics::counter!("inside_derived_skipped_total", "reason" => "no_stream_start")
                    .increment(1);
                continue;
            };
            match sessions.feed(&seg, Instant::now()) {
                Ok(d) => {
                    out.frames.extend(d.frames);
                    out.records.extend(d.records);
                }
                Err(why) => {
                    metrics::counter!("inside_derived_skipped_total", "reason" => why.as_str())
                        .increment(1);
                }
            }
        }
        metrics::gauge!("inside_derived_sessions").set(sessions.sessions() as f64);
        out
    }

    /// The hops that waited on members who have stopped streaming (CPU work: call it off the
    /// async runtime).
    pub fn tick(&self) -> Derived {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions.tick(Instant::now())
    }

    /// Publishes the hops' frames, delivers the nudges they call for and records the report's
    /// sums, in that order (the phone is waiting for the nudge; the record may let the report
    /// be written).
    pub async fn publish(
        &self,
        out: Derived,
        bus: &Bus,
        directory: &SessionDirectory,
        delivery: &NudgeDelivery,
        policy: &NudgePolicy,
        writer: &EventWriter,
    ) {
        let mut research: Option<(Uuid, bool)> = None;
        for hop in &out.frames {
            let Ok(payload) = serde_json::to_vec(&hop.derived).map(Bytes::from) else {
                continue;
            };
            let subject = bus.subjects().derived(hop.sid, hop.uid);
            if let Err(e) = bus.publish(subject, payload.clone()).await {
                tracing::warn!(sid = %hop.sid, error = %e, "publishing derived features failed");
            }
            let allowed = match research {
                Some((sid, allowed)) if sid == hop.sid => allowed,
                _ => {
                    let allowed = directory
                        .get(hop.sid)
                        .await
                        .is_some_and(|a| a.research_allowed());
                    research = Some((hop.sid, allowed));
                    allowed
                }
            };
            if allowed {
                let subject = bus.subjects().research_derived(hop.sid, hop.uid);
                if let Err(e) = bus.publish(subject, payload).await {
                    tracing::warn!(sid = %hop.sid, error = %e, "publishing research derived features failed");
                }
            }
            metrics::counter!("inside_derived_frames_total").increment(1);
            if let Some(nudge) = policy.evaluate(&hop.rules) {
                // the same window as the client's frames: a phone taken this window is told
                // nothing more, whoever raised the nudge
                if !delivery.known_limited(hop.sid, hop.uid) {
                    delivery.deliver(hop.sid, hop.uid, nudge, None).await;
                }
            }
        }
        for (sid, uid, record) in out.records {
            writer
                .record(SessionEvent {
                    session_id: sid,
                    user_id: Some(uid),
                    body: EventBody::Derived(record),
                })
                .await;
        }
    }
}
