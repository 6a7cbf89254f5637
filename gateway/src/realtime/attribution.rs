//! Whether live audio would reach a worker's speaker model (distributed; embedded, the answer is
//! [`crate::capabilities::LocalSpeakers`]). A gateway cannot see the workers, so it asks: a request on
//! `inside.v1.capabilities` that workers with a model answer (queue group `workers`). No
//! answer (NATS says "no responders" at once; otherwise a short timeout) means nobody would
//! attribute the stream, and `client.audio_start` is refused with `audio_unavailable` rather
//! than accepted into nothing. An answer is kept a moment ([`KEEP_YES`], [`KEEP_NO`]), and
//! concurrent askers wait for the one probe in flight, so a burst of starts costs one request.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use inside_bus::{Bus, Headers};
use inside_schemas::Capabilities;
use tokio::sync::Mutex;

use crate::capabilities::SpeakerAvailability;

/// How long a "yes" is trusted: the last worker with a model stopping is noticed within this.
pub const KEEP_YES: Duration = Duration::from_secs(2);
/// How long a "no" is trusted: shorter, so a worker that just started is found at once, while a
/// burst of starts with no worker still asks once.
pub const KEEP_NO: Duration = Duration::from_millis(500);
/// How long the probe waits for a worker when NATS cannot tell at once that nobody listens.
const PROBE_TIMEOUT: Duration = Duration::from_millis(750);

pub struct SpeakerProbe {
    bus: Bus,
    /// The last answer and when it was had; held across a probe so others wait for it.
    last: Mutex<Option<(Instant, bool)>>,
}

impl SpeakerProbe {
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            last: Mutex::new(None),
        }
    }
}

#[async_trait]
impl SpeakerAvailability for SpeakerProbe {
    /// Whether a worker's speaker model would attribute a live audio stream started now.
    async fn available(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = *last {
            if at.elapsed() < if answer { KEEP_YES } else { KEEP_NO } {
                return answer;
            }
        }
        let answer = self.probe().await;
        *last = Some((Instant::now(), answer));
        answer
    }
}

impl SpeakerProbe {
    async fn probe(&self) -> bool {
        let subject = self.bus.subjects().capabilities();
        let reply = self
            .bus
            .request(subject, Headers::new(), Bytes::new(), PROBE_TIMEOUT)
            .await;
        match reply {
            Ok(payload) => match serde_json::from_slice::<Capabilities>(&payload) {
                Ok(c) => c.speaker,
                Err(_) => {
                    inside_bus::inbound::reject("capabilities", "malformed", None);
                    false
                }
            },
            Err(inside_bus::BusError::NoResponders) => {
                tracing::debug!("no worker with a speaker model is running");
                false
            }
            Err(e) => {
                // a worker may exist but be stuck or cut off: worth a line, unlike "none runs"
                tracing::warn!(error = %e, "the speaker capability probe got no answer");
                false
            }
        }
    }
}
