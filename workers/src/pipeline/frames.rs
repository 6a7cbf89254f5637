//! One consumer of feature frames: validation, rules, nudge limit, publish, record.
//!
//! Anyone who can publish on the bus could forge a frame, so each one is checked before it
//! counts: sid and uid from the subject, the payload's size and shape, its numbers finite and
//! in range, and (from the [`SessionDirectory`] cache, not a query per frame) the session
//! active or finalizing and the uid a member whose consent is granted.
//!
//! Frames are handled one after another on one subscription; a nudge whose limit is judged
//! remotely (a Redis round trip, or the events stream's answer to a nudge published in its
//! turn) is handed to a delivery task of the consumer's own (at most `IN_FLIGHT` waiting), so
//! the frames behind it do not wait on the network; one for a (sid, uid) whose window this
//! process already knows is taken is dropped on the spot, so with the limit on only a frame
//! that might nudge costs a round trip. A frame handed to the delivery task is recorded by
//! that task, after its nudge: the report's barrier counts frames, so once a frame is recorded
//! the nudge it raised is too, however long the limit took to decide.

use inside_bus::inbound::{reject, MAX_JSON_PAYLOAD};
use inside_bus::{sid_uid, BusMessage, Subscription};
use inside_engine::NudgePolicy;
use inside_schemas::FeatureFrame;
use std::ops::ControlFlow;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::delivery::Raised;
use super::NudgeDelivery;
use inside_store::SessionDirectory;

/// Nudges waiting for the delivery task; past that the frame loop waits too.
const IN_FLIGHT: usize = 1024;

pub struct FrameConsumer {
    delivery: NudgeDelivery,
    policy: NudgePolicy,
    directory: SessionDirectory,
    /// Looked up in the recorder once, not per frame (so made after it is installed).
    received: metrics::Counter,
    processed: metrics::Counter,
}

impl FrameConsumer {
    pub fn new(delivery: NudgeDelivery, policy: NudgePolicy, directory: SessionDirectory) -> Self {
        Self {
            delivery,
            policy,
            directory,
            received: metrics::counter!("inside_frames_received_total"),
            processed: metrics::counter!("inside_frames_processed_total"),
        }
    }

    /// Handles frames until `shutdown`, then drains what the subscription
    /// still holds so a graceful stop loses nothing.
    pub async fn run(self, sub: Subscription, shutdown: CancellationToken) {
        let (raised, delivering) = if self.delivery.checks_remotely() {
            let (tx, rx) = mpsc::channel(IN_FLIGHT);
            let task = tokio::spawn(self.delivery.clone().deliver_raised(rx));
            (Some(tx), Some(task))
        } else {
            (None, None)
        };
        let (this, sender) = (&self, raised.as_ref());
        sub.serve(&shutdown, |msg| async move {
            this.handle(msg, sender).await;
            ControlFlow::Continue(())
        })
        .await;
        // the nudges still waiting on the limiter
        drop(raised);
        if let Some(task) = delivering {
            let _ = task.await;
        }
    }

    async fn handle(&self, msg: BusMessage, raised: Option<&mpsc::Sender<Raised>>) {
        self.received.increment(1);
        let Some((sid, uid)) = sid_uid(&msg.subject) else {
            reject("frames", "subject", None);
            return;
        };
        if msg.payload.len() > MAX_JSON_PAYLOAD {
            reject("frames", "too_large", Some(sid));
            return;
        }
        let frame: FeatureFrame = match serde_json::from_slice(&msg.payload) {
            Ok(f) => f,
            Err(_) => {
                metrics::counter!("inside_frames_invalid_total").increment(1);
                reject("frames", "malformed", Some(sid));
                return;
            }
        };
        if frame.check().is_err() {
            metrics::counter!("inside_frames_invalid_total").increment(1);
            reject("frames", "out_of_range", Some(sid));
            return;
        }
        // a finalizing session still takes what reached the bus: the report waits for it
        match self.directory.get(sid).await {
            Some(access) if access.records_from(uid) => {}
            Some(access) if !access.is_recording() => {
                return reject("frames", "session_not_active", Some(sid));
            }
            Some(_) => return reject("frames", "not_a_consenting_member", Some(sid)),
            None => return reject("frames", "unknown_session", Some(sid)),
        }
        let received_us = msg
            .header(inside_bus::FRAME_RECEIVED_US_HEADER)
            .and_then(|v| v.parse::<i64>().ok());
        // the nudge goes out before anything is recorded: the phone is waiting for it
        let sent = match (self.policy.evaluate(&frame), raised) {
            (Some(_), Some(_)) if self.delivery.known_limited(sid, uid) => None,
            (Some(nudge), Some(raised)) => {
                let mut nudge = Raised {
                    sid,
                    uid,
                    nudge,
                    frame_received_us: received_us,
                    frame,
                    taken: None,
                };
                // with the events stream judging the limit, the nudge is published here, in
                // the member's turn, and the delivery task waits for the stream's answer
                if self.delivery.start(&mut nudge).await && raised.send(nudge).await.is_ok() {
                    // the delivery task sits in this thread's LIFO slot, which no other thread
                    // may steal: without a yield it would wait for this loop to exhaust its
                    // coop budget before even asking Redis (or taking the stream's answer)
                    tokio::task::yield_now().await;
                    // it records the frame, after the nudge
                    self.processed.increment(1);
                    return;
                }
                None
            }
            (Some(nudge), None) => self.delivery.publish(sid, uid, nudge, received_us).await,
            (None, _) => None,
        };
        self.delivery.record_frame(sid, uid, frame, sent).await;
        self.processed.increment(1);
    }
}
