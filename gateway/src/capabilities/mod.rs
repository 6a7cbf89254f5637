//! What differs between the embedded default and a distributed deployment, as objects the
//! composition root (the `gateway` binary, crate `inside-server`) builds once at start-up and
//! hands to [`crate::AppState`]: where report jobs go, who embeds a voiceprint, whether live
//! audio would be attributed, and how the bus reports its health. Handlers call these and never
//! ask which deployment they run in.

mod bus_health;
mod enroller;
mod report_queue;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use inside_engine::speech::{Codec, Voiceprint};
use uuid::Uuid;

pub use bus_health::{InProcessBusHealth, NatsBusHealth};
pub use enroller::{LocalEnroller, WorkerEnroller};
pub use report_queue::{DatabaseReportQueue, JetStreamReportQueue};

use crate::error::ApiResult;

/// Where a finalized session's report job goes.
#[async_trait]
pub trait ReportQueue: Send + Sync {
    /// Puts session `sid`'s report job on the queue.
    async fn enqueue(&self, sid: Uuid) -> ApiResult<()>;
}

/// Who turns an enrolment recording into a voiceprint.
#[async_trait]
pub trait Enroller: Send + Sync {
    /// The voiceprint of `recording`, or the API error that says why there is none.
    async fn enrol(&self, codec: Codec, recording: Bytes) -> ApiResult<Voiceprint>;
}

/// Whether a live audio stream started now would be attributed to speakers.
#[async_trait]
pub trait SpeakerAvailability: Send + Sync {
    async fn available(&self) -> bool;
}

/// The bus's lines in `/health`: `ok` or the error, by check name.
#[async_trait]
pub trait BusHealth: Send + Sync {
    async fn checks(&self) -> BTreeMap<String, String>;
}

/// A model in this process attributes audio when there is one: the answer never changes.
pub struct LocalSpeakers(pub bool);

#[async_trait]
impl SpeakerAvailability for LocalSpeakers {
    async fn available(&self) -> bool {
        self.0
    }
}

/// The four capabilities, as one value for [`crate::AppState::new`].
#[derive(Clone)]
pub struct Capabilities {
    pub reports: Arc<dyn ReportQueue>,
    pub enroller: Arc<dyn Enroller>,
    pub speakers: Arc<dyn SpeakerAvailability>,
    pub bus_health: Arc<dyn BusHealth>,
}
