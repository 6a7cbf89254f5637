//! The analysis pipeline: feature frames in (queue group `workers`), the
//! engine's rules, the per-(sid, uid) nudge limit, nudges out on
//! `inside.v1.nudges.<sid>.<uid>`, frames and nudges recorded for the report.
//! With a speaker model it also attributes live audio segments
//! (`inside.v1.audio.*` → `inside.v1.speakers.<sid>`) and, on NATS, answers
//! voiceprint enrolment on `inside.v1.embed` and the gateways' capability probe on
//! `inside.v1.capabilities`; from the same audio it derives speaking rate, overlap and turns
//! (`inside.v1.derived.<sid>.<uid>`), judged by the same rules and nudge limit as frames. The same code runs in `worker`
//! processes on NATS and inside the gateway on the in-process bus. On NATS with Redis each
//! session's audio is handled by one worker (`affinity`).

pub mod affinity;
mod capabilities;
mod delivery;
pub mod derived;
mod derived_consumer;
mod enrol;
mod frames;
pub mod jobs;
mod segments;
mod speakers;
mod turns;
mod warmup;
mod writer;

pub use capabilities::run_capabilities;
pub use delivery::NudgeDelivery;
pub use derived_consumer::DerivedAnalysis;
pub use frames::FrameConsumer;
pub use speakers::{SpeakerAttribution, SpeakerConsumer};
pub use writer::EventWriter;

use std::sync::Arc;

use std::time::Duration;

use futures::future::join_all;
use inside_bus::{Bus, BusError, WORKERS};
use inside_engine::NudgePolicy;
use inside_settings::Settings;
use inside_store::event_log::{EventLog, Window};
use inside_store::limiter::Limiter;
use inside_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use inside_store::SessionDirectory;

/// What the pipeline needs from the settings.
#[derive(Clone)]
pub struct PipelineConfig {
    pub policy: NudgePolicy,
    /// `None` turns the nudge limit off (`NUDGE_RATE_LIMIT_SECONDS=0`).
    pub nudge_window: Option<Duration>,
    /// Consumers in the queue group (the in-process pool size).
    pub consumers: usize,
    /// The speaker model and its pool; `None`: no audio attribution here.
    pub speakers: Option<Arc<SpeakerAttribution>>,
    /// Sessions' status and members, shared with the gateway in the embedded default so a
    /// consent change made there applies here at once; `None`: the pipeline makes its own.
    pub directory: Option<SessionDirectory>,
    /// How much history of nudges and speaker events each session keeps for reconnecting
    /// sockets; `None`: none.
    pub resume_window: Option<Window>,
    /// The events stream in nats-server's memory rather than on disk, made so by the first
    /// process that needs it (`WEBSOCKET_RESUME_IN_MEMORY`).
    pub resume_in_memory: bool,
    /// The history, shared with the gateway in the embedded default; `None`: the pipeline
    /// keeps it next to its limiter (Redis) or not at all (NATS without Redis).
    pub event_log: Option<EventLog>,
    /// Derive conversation features from the live audio it attributes (`DERIVED_FEATURES`).
    pub derived_features: bool,
}

impl PipelineConfig {
    pub fn from_settings(settings: &Settings, consumers: usize) -> Self {
        Self {
            policy: NudgePolicy {
                speaking_rate_threshold: settings.speaking_rate_threshold,
                overlap_ratio_threshold: settings.overlap_ratio_threshold,
                talk_share_threshold: settings.balance_share,
                min_talk_time_s: settings.balance_min_seconds,
            },
            nudge_window: settings.nudge_window(),
            consumers: consumers.max(1),
            speakers: None,
            directory: None,
            resume_window: settings
                .resume_window()
                .map(|(events, max_age)| Window { events, max_age }),
            resume_in_memory: settings.websocket_resume_in_memory,
            event_log: None,
            derived_features: settings.derived_features,
        }
    }

    /// Appends nudges and speaker events to `log` (the gateway's, in the embedded default).
    pub fn with_event_log(mut self, log: EventLog) -> Self {
        self.event_log = Some(log);
        self
    }

    /// Validates messages against `directory` (instead of a cache of the pipeline's own).
    pub fn with_directory(mut self, directory: SessionDirectory) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Attributes live audio with `model` (scores under `SPEAKER_MATCH_THRESHOLD` are nobody).
    pub fn with_speaker_model(
        mut self,
        model: Option<Arc<inside_engine::speech::SpeakerModel>>,
        settings: &Settings,
    ) -> Result<Self, rayon::ThreadPoolBuildError> {
        if let Some(model) = model {
            self.speakers = Some(Arc::new(SpeakerAttribution::new(
                model,
                settings.speaker_match_threshold as f32,
            )?));
        }
        Ok(self)
    }
}

/// A running pipeline; `stopped` resolves after a graceful stop.
pub struct Pipeline {
    consumers: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
}

impl Pipeline {
    /// Subscribes every consumer before returning, so no frame published
    /// afterwards is missed, then runs until `shutdown`.
    pub async fn start(
        bus: Bus,
        limiter: Limiter,
        store: Store,
        config: PipelineConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, BusError> {
        let (writer, writer_task) = EventWriter::start(store.clone());
        let directory = config
            .directory
            .clone()
            .unwrap_or_else(|| SessionDirectory::new(store.clone()));
        let events = config.event_log.clone().unwrap_or_else(|| {
            EventLog::for_deployment(&limiter, bus.is_local(), config.resume_window)
        });
        let mut delivery = NudgeDelivery::new(
            bus.clone(),
            limiter.clone(),
            events.clone(),
            writer.clone(),
            config.nudge_window,
        );
        if let Some(turns) = turns::for_deployment(&bus, &config, events.is_on_bus()).await {
            delivery = delivery.with_turns(turns);
        }
        let mut consumers = Vec::with_capacity(config.consumers + 1);
        if !bus.is_local() {
            // in-process, the gateway reads the session into this same directory at a join
            let sub = bus.subscribe(bus.subjects().all_state()).await?;
            consumers.push(tokio::spawn(warmup::run(
                sub,
                directory.clone(),
                shutdown.clone(),
            )));
        }
        for _ in 0..config.consumers {
            let sub = bus
                .queue_subscribe(bus.subjects().all_frames(), WORKERS)
                .await?;
            let consumer = FrameConsumer::new(delivery.clone(), config.policy, directory.clone());
            consumers.push(tokio::spawn(consumer.run(sub, shutdown.clone())));
        }
        if let Some(attribution) = &config.speakers {
            let sub = bus
                .queue_subscribe(bus.subjects().all_audio(), WORKERS)
                .await?;
            let mut consumer = SpeakerConsumer::new(
                bus.clone(),
                limiter.clone(),
                writer.clone(),
                delivery.clone(),
                config.policy,
                attribution.clone(),
                directory.clone(),
            )
            .with_derived(config.derived_features.then(DerivedAnalysis::default));
            let ownership =
                affinity::AudioOwnership::new(bus.clone(), &limiter, uuid::Uuid::new_v4());
            if let Some(ownership) = ownership {
                let own = ownership.subscribe().await?;
                let (queue, inbox) = mpsc::channel(affinity::INBOX_CAPACITY);
                tracing::info!(worker = %ownership.worker(), "live audio: one worker per session (Redis)");
                consumers.push(tokio::spawn(affinity::run_inbox(
                    bus.clone(),
                    own,
                    queue,
                    shutdown.clone(),
                )));
                consumer = consumer.with_ownership(ownership, inbox);
            }
            consumers.push(tokio::spawn(consumer.run(sub, shutdown.clone())));
            if !bus.is_local() {
                let sub = bus.queue_subscribe(bus.subjects().embed(), WORKERS).await?;
                consumers.push(tokio::spawn(enrol::run_enrolment(
                    bus.clone(),
                    sub,
                    attribution.clone(),
                    shutdown.clone(),
                )));
                // last: a gateway that hears this worker can count on the audio consumer
                let sub = bus
                    .queue_subscribe(bus.subjects().capabilities(), WORKERS)
                    .await?;
                consumers.push(tokio::spawn(capabilities::run_capabilities(
                    bus.clone(),
                    sub,
                    shutdown.clone(),
                )));
            }
        }
        // The writer stops once every consumer has dropped its handle.
        let delivery_turns = delivery.takes_turns();
        drop(writer);
        drop(delivery);
        bus.flush().await?;
        tracing::info!(
            consumers = config.consumers,
            speakers = config.speakers.is_some(),
            derived_features = config.speakers.is_some() && config.derived_features,
            nudge_window_s = config.nudge_window.map(|w| w.as_secs_f64()),
            nudge_limit = match (config.nudge_window, delivery_turns) {
                (None, _) => "off",
                (Some(_), true) => "events stream",
                (Some(_), false) if limiter.is_remote() => "redis",
                (Some(_), false) => "memory",
            },
            event_history = if events.is_on_bus() {
                "events stream"
            } else if events.is_on() {
                "memory"
            } else {
                "off"
            },
            "analysis pipeline started"
        );
        Ok(Self {
            consumers,
            writer: writer_task,
        })
    }

    /// Waits for the consumers to drain and the writer to flush.
    pub async fn stopped(self) {
        join_all(self.consumers).await;
        let _ = self.writer.await;
        tracing::info!("analysis pipeline stopped");
    }
}
