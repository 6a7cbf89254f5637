//! Everything a request handler needs, built once at start-up from the settings.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use inside_settings::{ExposeSecret, Settings};
use inside_store::event_log::{EventLog, Window};
use inside_store::limiter::Limiter;
use inside_store::Store;
use inside_workers::{ReportConfig, ReportJobs};
use metrics_exporter_prometheus::PrometheusHandle;
use rand::RngCore;

use crate::auth::{HasherPool, LiveAccounts, PasswordHasher, TokenKeys};
use crate::mail::{self, Mailer};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub limiter: Limiter,
    /// Each session's recent nudges, speaker events and pokes, for sockets that reconnect
    /// with `?since=` (shared with the embedded pipeline).
    pub events: EventLog,
    pub keys: TokenKeys,
    /// Which token holders still have an account (see `auth::accounts`).
    pub accounts: LiveAccounts,
    pub hasher: PasswordHasher,
    pub mailer: Arc<dyn Mailer>,
    pub jobs: ReportJobs,
    pub nats: Option<async_nats::Client>,
    /// NATS or the in-process bus; the realtime path and pokes go through it.
    pub bus: inside_bus::Bus,
    pub hub: crate::realtime::SessionHub,
    /// Sessions' status and members, cached for the realtime path (shared with the embedded
    /// pipeline).
    pub sessions: inside_store::SessionDirectory,
    /// Copies live data to the research subjects while every member agreed.
    pub research: crate::realtime::ResearchGate,
    pub metrics: PrometheusHandle,
    pub speaker: Option<Arc<inside_engine::speech::SpeakerModel>>,
    /// Whether live audio would be attributed (this process's model, or a worker's).
    pub speakers: crate::realtime::SpeakerProbe,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Connects to what the settings name and applies migrations.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.require_shared_limits()?;
        let store = Store::connect(
            settings.database_url.expose_secret(),
            settings.database_max_connections,
            settings.database_echo,
        )
        .await
        .context("connecting to the database (DATABASE_URL)")?;
        store.migrate().await.context("applying migrations")?;
        let limiter = match &settings.redis_url {
            Some(url) => Limiter::redis(url.expose_secret(), &settings.nats_subject_prefix)
                .await
                .context("connecting to Redis (REDIS_URL)")?,
            None => Limiter::memory(),
        };
        let subjects = inside_bus::Subjects::new(settings.nats_subject_prefix.clone());
        let bus = match &settings.nats_url {
            Some(url) => {
                let bus = inside_bus::Bus::connect_nats_with(
                    url,
                    "inside-gateway",
                    &settings.nats,
                    subjects,
                )
                .await
                .context("connecting to NATS (NATS_URL)")?;
                if let Some(client) = bus.nats() {
                    inside_bus::jobs::ensure_stream(client, bus.subjects())
                        .await
                        .context("creating the JetStream report job stream")?;
                }
                bus
            }
            None => inside_bus::Bus::local(subjects),
        };
        let events = EventLog::for_deployment(
            &limiter,
            bus.is_local(),
            settings
                .resume_window()
                .map(|(events, max_age)| Window { events, max_age }),
        );
        let nats = bus.nats().cloned();
        let hub = crate::realtime::SessionHub::new(
            bus.clone(),
            crate::realtime::caps::SocketLimits {
                per_user: settings.websocket_max_sockets_per_user,
                per_client: settings.websocket_max_sockets_per_client,
            },
        );
        hub.start_presence(crate::realtime::PresenceTimers {
            heartbeat: Duration::from_secs_f64(settings.presence_heartbeat_seconds),
            ttl: Duration::from_secs_f64(settings.presence_ttl_seconds),
        });
        let sessions = inside_store::SessionDirectory::new(store.clone());
        let research = crate::realtime::ResearchGate::new(bus.clone(), sessions.clone());
        let secret = secret_key(&settings)?;
        let keys = TokenKeys::new(
            &secret,
            Duration::from_secs(settings.access_token_expire_minutes * 60),
            Duration::from_secs(settings.refresh_token_expire_days * 86_400),
        );
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let hasher = PasswordHasher::new(
            settings.bcrypt_cost,
            HasherPool::for_cores(cores, settings.bcrypt_queue),
        )?;
        let mailer = mail::from_settings(&settings)?;
        let jobs = ReportJobs::new(store.clone(), ReportConfig::from_settings(&settings));
        let speaker = load_speaker(&settings.ecapa_model_dir);
        let speakers = crate::realtime::SpeakerProbe::new(bus.clone(), speaker.is_some());
        Ok(Self(Arc::new(Inner {
            settings: Arc::new(settings),
            store,
            limiter,
            events,
            accounts: LiveAccounts::new(keys.access_ttl),
            keys,
            hasher,
            mailer,
            jobs,
            nats,
            bus,
            hub,
            sessions,
            research,
            metrics: crate::telemetry::metrics_handle(),
            speaker,
            speakers,
        })))
    }
}

/// `SECRET_KEY`, or a random key generated once and kept in the data directory.
fn secret_key(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(k) = &settings.secret_key {
        return Ok(k.expose_secret().as_bytes().to_vec());
    }
    let path = settings.data_dir.join("secret_key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        if k.trim().len() >= 32 {
            return Ok(k.trim().as_bytes().to_vec());
        }
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    std::fs::write(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(path = %path.display(), "SECRET_KEY not set: generated a development key (set SECRET_KEY in production)");
    Ok(key.into_bytes())
}

/// The speaker model, when `ECAPA_MODEL_DIR` names one that loads. Without it
/// the server still runs and voiceprint enrolment answers 503.
fn load_speaker(
    dir: &Option<std::path::PathBuf>,
) -> Option<Arc<inside_engine::speech::SpeakerModel>> {
    let dir = dir.as_ref()?;
    match inside_engine::speech::SpeakerModel::load(dir) {
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
