//! A worker in the test's own process, on its own NATS connection, as the gateway's settings
//! name it (URL and identity, Redis limiter when `REDIS_URL` is set): the analysis pipeline and
//! the JetStream report jobs.

use std::collections::HashMap;
use std::sync::Arc;

use inside_bus::{Bus, Subjects};
use inside_engine::speech::SpeakerModel;
use inside_settings::{ExposeSecret, Settings};
use inside_store::limiter::Limiter;
use inside_store::Store;
use inside_workers::pipeline::jobs::run_report_jobs;
use inside_workers::pipeline::{Pipeline, PipelineConfig};
use inside_workers::ReportConfig;
use tokio_util::sync::CancellationToken;

/// Starts a worker with `consumers` frame consumers; it attributes live audio and answers
/// enrolment when given a `model`. Stops when `stop` fires (`Pipeline::stopped`).
pub async fn start_worker(
    env: &HashMap<String, String>,
    consumers: usize,
    model: Option<Arc<SpeakerModel>>,
    stop: CancellationToken,
) -> Pipeline {
    let settings = Settings::from_map(env).expect("worker settings");
    let subjects = Subjects::new(settings.nats_subject_prefix.clone());
    let bus = Bus::connect_nats_with(
        settings
            .nats_url
            .as_deref()
            .expect("a worker needs NATS_URL"),
        "test-worker",
        &settings.nats,
        subjects.clone(),
    )
    .await
    .expect("worker connects to NATS");
    let store = Store::connect(settings.database_url.expose_secret(), 3, false)
        .await
        .expect("worker connects to the database");
    let limiter = match &settings.redis_url {
        Some(url) => Limiter::redis(url.expose_secret(), &settings.nats_subject_prefix)
            .await
            .expect("worker connects to Redis"),
        None => Limiter::memory(),
    };
    tokio::spawn(run_report_jobs(
        bus.nats().expect("a NATS bus").clone(),
        subjects,
        store.clone(),
        ReportConfig::from_settings(&settings),
        stop.clone(),
    ));
    Pipeline::start(
        bus,
        limiter,
        store,
        PipelineConfig::from_settings(&settings, consumers)
            .with_speaker_model(model, &settings)
            .expect("speaker model settings"),
        stop,
    )
    .await
    .expect("worker pipeline starts")
}
