//! Everything a request handler needs, built once at start-up from the settings.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use inside_settings::{ExposeSecret, Settings};
use inside_store::event_log::{EventLog, Window};
use inside_store::limiter::Limiter;
use inside_store::{SessionDirectory, Store};
use rand::RngCore;

use crate::auth::{HasherPool, LiveAccounts, PasswordHasher, TokenKeys};
use crate::capabilities::{BusHealth, Capabilities, Enroller, ReportQueue, SpeakerAvailability};
use crate::error::StartupError;
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
    /// Where finalized sessions' report jobs go.
    pub reports: Arc<dyn ReportQueue>,
    /// Who turns an enrolment recording into a voiceprint.
    pub enroller: Arc<dyn Enroller>,
    /// Whether live audio would be attributed (this process's model, or a worker's).
    pub speakers: Arc<dyn SpeakerAvailability>,
    /// The bus's lines in `/health`.
    pub bus_health: Arc<dyn BusHealth>,
    /// NATS or the in-process bus; the realtime path and pokes go through it.
    pub bus: inside_bus::Bus,
    pub hub: crate::realtime::SessionHub,
    /// Sessions' status and members, cached for the realtime path (shared with the embedded
    /// pipeline).
    pub sessions: SessionDirectory,
    /// Copies live data to the research subjects while every member agreed.
    pub research: crate::realtime::ResearchGate,
    pub metrics: inside_process::Recorder,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// What a gateway connects to, opened from the settings: the database (migrated), the limiter
/// and the bus (with NATS, the report job stream exists once this returns).
pub struct Connections {
    pub store: Store,
    pub limiter: Limiter,
    pub bus: inside_bus::Bus,
}

impl Connections {
    pub async fn open(settings: &Settings) -> Result<Self, StartupError> {
        settings.require_shared_limits()?;
        let store = Store::connect(
            settings.database_url.expose_secret(),
            settings.database_max_connections,
            settings.database_echo,
        )
        .await
        .map_err(StartupError::store(
            "connecting to the database (DATABASE_URL)",
        ))?;
        store
            .migrate()
            .await
            .map_err(StartupError::store("applying migrations"))?;
        let limiter = match &settings.redis_url {
            Some(url) => Limiter::redis(url.expose_secret(), &settings.nats_subject_prefix)
                .await
                .map_err(StartupError::store("connecting to Redis (REDIS_URL)"))?,
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
                .map_err(StartupError::bus("connecting to NATS (NATS_URL)"))?;
                if let Some(client) = bus.nats() {
                    inside_bus::jobs::ensure_stream(client, bus.subjects())
                        .await
                        .map_err(StartupError::bus(
                            "creating the JetStream report job stream",
                        ))?;
                }
                bus
            }
            None => inside_bus::Bus::local(subjects),
        };
        Ok(Self {
            store,
            limiter,
            bus,
        })
    }
}

impl AppState {
    /// The state over `connections`, with what differs by deployment in `capabilities`.
    pub fn new(
        settings: Settings,
        connections: Connections,
        capabilities: Capabilities,
    ) -> Result<Self, StartupError> {
        let Connections {
            store,
            limiter,
            bus,
        } = connections;
        let events = EventLog::for_deployment(
            &limiter,
            bus.is_local(),
            settings
                .resume_window()
                .map(|(events, max_age)| Window { events, max_age }),
        );
        // before the hub and the pipeline, which keep handles on their per-frame series
        let metrics = inside_process::Recorder::install(&settings.app_version);
        crate::telemetry::describe_metrics();
        let hub = crate::realtime::SessionHub::new(
            bus.clone(),
            crate::realtime::caps::SocketLimits {
                per_user: settings.websocket_max_sockets_per_user,
                per_client: settings.websocket_max_sockets_per_client,
            },
            events
                .is_on_bus()
                .then_some(settings.resume_window())
                .flatten()
                .map(|(events, max_age)| inside_bus::history::Retention {
                    per_subject: events as u64,
                    max_age,
                    in_memory: settings.websocket_resume_in_memory,
                }),
        );
        hub.start_presence(crate::realtime::PresenceTimers {
            heartbeat: Duration::from_secs_f64(settings.presence_heartbeat_seconds),
            ttl: Duration::from_secs_f64(settings.presence_ttl_seconds),
        });
        let sessions = SessionDirectory::new(store.clone());
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
        )
        .map_err(StartupError::Hasher)?;
        let mailer = mail::from_settings(&settings)?;
        let Capabilities {
            reports,
            enroller,
            speakers,
            bus_health,
        } = capabilities;
        Ok(Self(Arc::new(Inner {
            settings: Arc::new(settings),
            store,
            limiter,
            events,
            accounts: LiveAccounts::new(keys.access_ttl),
            keys,
            hasher,
            mailer,
            reports,
            enroller,
            speakers,
            bus_health,
            bus,
            hub,
            sessions,
            research,
            metrics,
        })))
    }
}

/// `SECRET_KEY`, or a random key generated once and kept in the data directory.
fn secret_key(settings: &Settings) -> Result<Vec<u8>, StartupError> {
    if let Some(k) = &settings.secret_key {
        return Ok(k.expose_secret().as_bytes().to_vec());
    }
    let path = settings.data_dir.join("secret_key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        if k.trim().len() >= 32 {
            return Ok(k.trim().as_bytes().to_vec());
        }
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartupError::Io {
        step: format!("creating {}", settings.data_dir.display()),
        source,
    })?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    std::fs::write(&path, &key).map_err(|source| StartupError::Io {
        step: format!("writing {}", path.display()),
        source,
    })?;
    tracing::warn!(path = %path.display(), "SECRET_KEY not set: generated a development key (set SECRET_KEY in production)");
    Ok(key.into_bytes())
}
