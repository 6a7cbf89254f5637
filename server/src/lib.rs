//! The composition root of the `gateway` binary: it opens the connections the settings name,
//! chooses the capabilities of the deployment once (embedded default: database job queue,
//! this process's speaker model, in-process bus; distributed: JetStream jobs, the workers'
//! model, NATS health) and, in the embedded default, runs the analysis pipeline and the report
//! jobs of `inside-workers` beside the gateway.

mod embedded;

use std::sync::Arc;

use anyhow::Context;
use inside_engine::speech::SpeakerModel;
use inside_gateway::capabilities::{
    Capabilities, JetStreamReportQueue, NatsBusHealth, WorkerEnroller,
};
use inside_gateway::realtime::SpeakerProbe;
use inside_gateway::{AppState, Connections};
use inside_settings::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use embedded::Embedded;

/// A gateway ready to serve, with what the embedded default runs beside it.
pub struct Server {
    pub state: AppState,
    embedded: Option<Embedded>,
}

impl Server {
    /// Connects to what the settings name, applies migrations and wires the deployment.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let connections = Connections::open(&settings).await?;
        // The one place that tells the two deployments apart.
        match connections.bus.nats().cloned() {
            Some(client) => {
                let bus = connections.bus.clone();
                let capabilities = Capabilities {
                    reports: Arc::new(JetStreamReportQueue::new(
                        client.clone(),
                        bus.subjects().clone(),
                    )),
                    enroller: Arc::new(WorkerEnroller::new(bus.clone())),
                    speakers: Arc::new(SpeakerProbe::new(bus.clone())),
                    bus_health: Arc::new(NatsBusHealth::new(client, bus.subjects().jobs_stream())),
                };
                let state = AppState::new(settings, connections, capabilities)?;
                Ok(Self {
                    state,
                    embedded: None,
                })
            }
            None => {
                let model = load_speaker(&settings.ecapa_model_dir);
                let (embedded, capabilities) =
                    Embedded::wire(&settings, connections.store.clone(), model);
                let state = AppState::new(settings, connections, capabilities)?;
                Ok(Self {
                    state,
                    embedded: Some(embedded),
                })
            }
        }
    }

    /// Serves on `listener` until `shutdown`; the embedded pipeline and report jobs run beside
    /// the gateway and stop after its sockets have drained.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        match self.embedded {
            Some(embedded) => {
                let running = embedded
                    .start(&self.state, shutdown.child_token())
                    .await
                    .context("starting the embedded pipeline")?;
                inside_gateway::serve(self.state, listener, shutdown, running.stopped()).await?
            }
            None => inside_gateway::serve(self.state, listener, shutdown, async {}).await?,
        }
        Ok(())
    }
}

/// The speaker model, when `ECAPA_MODEL_DIR` names one that loads. Without it the server
/// still runs and voiceprint enrolment answers 503.
fn load_speaker(dir: &Option<std::path::PathBuf>) -> Option<Arc<SpeakerModel>> {
    let dir = dir.as_ref()?;
    match SpeakerModel::load(dir) {
        Ok(m) => {
            tracing::info!(dir = %dir.display(), "speaker model loaded");
            Some(Arc::new(m))
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "speaker model not loaded; voiceprints unavailable");
            None
        }
    }
}
