//! The embedded default: one process runs the gateway, the report jobs from the database queue
//! and the analysis pipeline on the in-process bus, sharing the gateway's session directory and
//! event history so a consent change or a nudge is seen by both at once.

use std::sync::Arc;

use inside_engine::speech::SpeakerModel;
use inside_gateway::capabilities::{
    Capabilities, DatabaseReportQueue, InProcessBusHealth, LocalEnroller, LocalSpeakers,
};
use inside_gateway::AppState;
use inside_settings::Settings;
use inside_store::Store;
use inside_workers::pipeline::{Pipeline, PipelineConfig};
use inside_workers::{ReportConfig, ReportJobs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the embedded default runs beside the gateway, before it starts.
pub struct Embedded {
    jobs: ReportJobs,
    model: Option<Arc<SpeakerModel>>,
}

/// The embedded pipeline and report runner, running.
pub struct Running {
    jobs: JoinHandle<()>,
    pipeline: Pipeline,
}

impl Embedded {
    /// The runner and the gateway's capabilities that go with it: jobs in the database, woken
    /// at once; enrolment and attribution by `model` in this process.
    pub fn wire(
        settings: &Settings,
        store: Store,
        model: Option<Arc<SpeakerModel>>,
    ) -> (Self, Capabilities) {
        let jobs = ReportJobs::new(store.clone(), ReportConfig::from_settings(settings));
        let capabilities = Capabilities {
            reports: Arc::new(DatabaseReportQueue::new(store, jobs.waker())),
            enroller: Arc::new(LocalEnroller::new(model.clone())),
            speakers: Arc::new(LocalSpeakers(model.is_some())),
            bus_health: Arc::new(InProcessBusHealth),
        };
        (Self { jobs, model }, capabilities)
    }

    /// Starts the report runner and the pipeline (one consumer per core) on the gateway's bus.
    pub async fn start(
        self,
        state: &AppState,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Running> {
        // telemetry of the worker side, which runs here too
        inside_workers::telemetry::describe_metrics();
        inside_workers::telemetry::register_at_zero();
        let jobs = tokio::spawn(self.jobs.run(shutdown.child_token()));
        let consumers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let config = PipelineConfig::from_settings(&state.settings, consumers)
            .with_speaker_model(self.model, &state.settings)?
            .with_directory(state.sessions.clone())
            .with_event_log(state.events.clone());
        let pipeline = Pipeline::start(
            state.bus.clone(),
            state.limiter.clone(),
            state.store.clone(),
            config,
            shutdown,
        )
        .await?;
        Ok(Running { jobs, pipeline })
    }
}

impl Running {
    /// Resolves once the runner and the pipeline have stopped (after the shutdown).
    pub async fn stopped(self) {
        let _ = self.jobs.await;
        self.pipeline.stopped().await;
    }
}
