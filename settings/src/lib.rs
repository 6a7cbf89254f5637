//! The one typed settings struct of Inside, loaded once at start-up.
//!
//! Precedence: process environment, then `.env`, then `inside.toml`, then
//! defaults. Every value is validated here so a bad setting stops the process
//! with a message that names it, instead of failing later mid-request.

pub mod nats;
mod parse;
mod secret;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use secrecy::{ExposeSecret, SecretString};

pub use crate::nats::{ClientCert, NatsAuth, NatsOptions, NatsTls};

use parse::Raw;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("reading {path}: {message}")]
    File { path: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected text or json".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub app_name: String,
    pub app_version: String,
    pub debug: bool,
    /// `text` for people, `json` for log collectors (`LOG_FORMAT`).
    pub log_format: LogFormat,
    pub bind_addr: SocketAddr,
    pub worker_bind_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: SecretString,
    pub database_kind: DatabaseKind,
    pub database_echo: bool,
    pub database_max_connections: u32,
    pub redis_url: Option<SecretString>,
    /// With NATS but without Redis, each process would keep its own nudge, login and poke
    /// limits; gateways and workers refuse to start so unless this says it is wanted.
    pub allow_process_local_limits: bool,
    pub redis_queue_url: Option<SecretString>,
    /// Without credentials: those given in it are in [`Settings::nats`].
    pub nats_url: Option<String>,
    /// Credentials and TLS of the NATS connection.
    pub nats: NatsOptions,
    /// Prefix of every NATS subject (`inside` in production; tests pick their own).
    pub nats_subject_prefix: String,
    /// `None`: generate one and keep it in the data directory (dev only).
    pub secret_key: Option<SecretString>,
    pub algorithm: String,
    pub access_token_expire_minutes: u64,
    pub refresh_token_expire_days: u64,
    pub bcrypt_cost: u32,
    pub cors_origins: Vec<String>,
    pub websocket_heartbeat_interval: f64,
    pub websocket_timeout: f64,
    /// Seconds between a gateway's re-announcements of its participants (with NATS).
    pub presence_heartbeat_seconds: f64,
    /// Seconds after which another gateway's participants not re-announced are dropped (a
    /// gateway that died); at least twice the heartbeat, so one lost announcement drops none.
    pub presence_ttl_seconds: f64,
    /// Open WebSocket sockets one user may hold on a gateway (0: no cap).
    pub websocket_max_sockets_per_user: usize,
    /// Open WebSocket sockets one client address may hold on a gateway (0: no cap).
    pub websocket_max_sockets_per_client: usize,
    /// Events each session's history keeps for reconnecting sockets (`?since=`); 0 keeps none.
    pub websocket_resume_events: usize,
    /// Seconds an event stays in the history.
    pub websocket_resume_seconds: f64,
    /// On NATS: the events stream in nats-server's memory rather than on disk (a NATS restart
    /// then loses it, and every socket gets `server.resync`).
    pub websocket_resume_in_memory: bool,
    /// Seconds a connection (new, or kept alive between requests) has to send a request head.
    pub http_header_read_timeout: f64,
    /// Seconds without a byte read or written after which an HTTP connection (not a
    /// WebSocket) is closed: a stalled body or response.
    pub http_idle_timeout: f64,
    /// Open TCP connections one client address may hold (0: no cap).
    pub http_max_connections_per_client: usize,
    pub nudge_rate_limit_seconds: f64,
    pub speaking_rate_threshold: f64,
    pub overlap_ratio_threshold: f64,
    /// Share of the talk time (0.5–1, exclusive of 1) above which a speaker is nudged with
    /// `BALANCE_TALK_TIME`.
    pub balance_share: f64,
    /// Seconds of talk, all members together, before the balance rule judges at all.
    pub balance_min_seconds: f64,
    /// Whether the workers derive speaking rate, overlap and turns from live audio and nudge
    /// on them (`DERIVED_FEATURES`, on by default; `off` disables).
    pub derived_features: bool,
    /// Failed (or in-flight) logins per (email, client address) in a window.
    pub login_max_failures: u32,
    pub login_window_seconds: u64,
    /// Failed (or in-flight) logins per client address, over every email, in a window.
    pub login_address_max_failures: u32,
    /// Signups per client address in a window.
    pub signup_max_per_address: u32,
    pub signup_window_seconds: u64,
    /// Password hashing jobs that may wait for a thread, per lane (signup, login).
    pub bcrypt_queue: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client; empty: the
    /// header is ignored and the TCP peer is the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub poke_limit: u32,
    pub poke_window_seconds: u64,
    /// Invitations (relationships created) one account may send per window.
    pub invitation_sender_limit: u32,
    /// Invitations one email address may receive per window, from anyone.
    pub invitation_address_limit: u32,
    pub invitation_window_seconds: u64,
    pub sendgrid_api_key: Option<SecretString>,
    pub sendgrid_api_url: String,
    pub email_from_address: String,
    pub email_from_name: String,
    pub ecapa_model_dir: Option<PathBuf>,
    pub max_audio_seconds: f64,
    /// Cosine below which a live audio segment is attributed to nobody.
    pub speaker_match_threshold: f64,
    pub report_job_poll_ms: u64,
    /// How long a report job handed to a worker may go without an ack or a progress beat
    /// before JetStream gives it to another (a worker killed mid-job).
    pub report_job_ack_wait_s: u64,
    /// Longest wait, at finalize, for everything the gateways published for the session to be
    /// recorded before its report is written anyway (marked incomplete).
    pub report_wait_seconds: f64,
    /// A failed report job runs again after this × the attempt number² (at most 30 s).
    pub report_job_retry_ms: u64,
}

impl Settings {
    /// Loads from the real process environment, `./.env` and `./inside.toml`.
    pub fn load() -> Result<Self, SettingsError> {
        Self::load_from(Path::new("."), std::env::vars().collect())
    }

    /// Loads with `dir` holding the optional `.env` and `inside.toml`, and
    /// `env` standing for the process environment.
    pub fn load_from(dir: &Path, env: HashMap<String, String>) -> Result<Self, SettingsError> {
        let mut layers = parse::toml_layer(&dir.join("inside.toml"))?;
        layers.extend(parse::dotenv_layer(&dir.join(".env"))?);
        layers.extend(env);
        Self::from_map(&layers)
    }

    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let r = Raw(map);
        let data_dir = PathBuf::from(r.string("DATA_DIR", "./data"));
        let default_db = format!("sqlite://{}/inside.db", data_dir.display());
        let database_url = r.string("DATABASE_URL", &default_db);
        let database_kind = parse::database_kind(&database_url)?;
        let debug = r.boolean("DEBUG", false)?;
        let secret_key = r.optional("SECRET_KEY");
        let (nats_url, nats) = nats::load(
            &r,
            parse::url_opt(&r, "NATS_URL", &["nats", "tls", "ws", "wss"])?,
        )?;
        let settings = Settings {
            app_name: r.string("APP_NAME", "Inside"),
            app_version: r.string("APP_VERSION", env!("CARGO_PKG_VERSION")),
            debug,
            log_format: r.parsed("LOG_FORMAT", "text")?,
            bind_addr: r.parsed("BIND_ADDR", "0.0.0.0:8000")?,
            worker_bind_addr: r.parsed("WORKER_BIND_ADDR", "0.0.0.0:8001")?,
            data_dir,
            database_url: database_url.into(),
            database_kind,
            database_echo: r.boolean("DATABASE_ECHO", false)?,
            database_max_connections: r.ranged(
                "DATABASE_MAX_CONNECTIONS",
                default_pool_size(),
                1,
                1000,
            )?,
            redis_url: parse::url_opt(&r, "REDIS_URL", &["redis", "rediss"])?.map(Into::into),
            allow_process_local_limits: r.boolean("ALLOW_PROCESS_LOCAL_LIMITS", false)?,
            redis_queue_url: parse::url_opt(&r, "REDIS_QUEUE_URL", &["redis", "rediss"])?
                .map(Into::into),
            nats_url,
            nats,
            nats_subject_prefix: parse::subject_prefix(&r.string("NATS_SUBJECT_PREFIX", "inside"))?,
            secret_key: secret_key.clone().map(Into::into),
            algorithm: r.string("ALGORITHM", "HS256"),
            access_token_expire_minutes: r.ranged("ACCESS_TOKEN_EXPIRE_MINUTES", 15, 1, 24 * 60)?,
            refresh_token_expire_days: r.ranged("REFRESH_TOKEN_EXPIRE_DAYS", 30, 1, 365)?,
            bcrypt_cost: r.ranged("BCRYPT_COST", 12, 4, 31)?,
            cors_origins: r
                .string("CORS_ORIGINS", "http://localhost:*,http://127.0.0.1:*")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            websocket_heartbeat_interval: r.float(
                "WEBSOCKET_HEARTBEAT_INTERVAL",
                30.0,
                0.01,
                3600.0,
            )?,
            websocket_timeout: r.float("WEBSOCKET_TIMEOUT", 60.0, 0.01, 86400.0)?,
            presence_heartbeat_seconds: r.float("PRESENCE_HEARTBEAT_SECONDS", 5.0, 0.05, 3600.0)?,
            presence_ttl_seconds: r.float("PRESENCE_TTL_SECONDS", 15.0, 0.1, 86400.0)?,
            websocket_max_sockets_per_user: r.ranged(
                "WEBSOCKET_MAX_SOCKETS_PER_USER",
                16,
                0,
                1_000_000,
            )?,
            websocket_max_sockets_per_client: r.ranged(
                "WEBSOCKET_MAX_SOCKETS_PER_CLIENT",
                256,
                0,
                1_000_000,
            )?,
            websocket_resume_events: r.ranged("WEBSOCKET_RESUME_EVENTS", 1_000, 0, 100_000)?,
            websocket_resume_seconds: r.float("WEBSOCKET_RESUME_SECONDS", 120.0, 1.0, 86_400.0)?,
            websocket_resume_in_memory: r.boolean("WEBSOCKET_RESUME_IN_MEMORY", false)?,
            http_header_read_timeout: r.float("HTTP_HEADER_READ_TIMEOUT", 30.0, 0.05, 3600.0)?,
            http_idle_timeout: r.float("HTTP_IDLE_TIMEOUT", 60.0, 0.05, 86400.0)?,
            http_max_connections_per_client: r.ranged(
                "HTTP_MAX_CONNECTIONS_PER_CLIENT",
                512,
                0,
                1_000_000,
            )?,
            nudge_rate_limit_seconds: r.float("NUDGE_RATE_LIMIT_SECONDS", 10.0, 0.0, 86400.0)?,
            speaking_rate_threshold: r.float("SPEAKING_RATE_THRESHOLD", 3.0, 0.001, 100.0)?,
            overlap_ratio_threshold: r.float("OVERLAP_RATIO_THRESHOLD", 0.3, 0.001, 1.0)?,
            balance_share: r.float("BALANCE_SHARE", 0.7, 0.5, 0.99)?,
            balance_min_seconds: r.float("BALANCE_MIN_SECONDS", 30.0, 0.0, 86_400.0)?,
            derived_features: r.boolean("DERIVED_FEATURES", true)?,
            login_max_failures: r.ranged("LOGIN_MAX_FAILURES", 10, 1, 10_000)?,
            login_window_seconds: r.ranged("LOGIN_WINDOW_SECONDS", 300, 1, 86400)?,
            login_address_max_failures: r.ranged(
                "LOGIN_ADDRESS_MAX_FAILURES",
                100,
                1,
                1_000_000,
            )?,
            signup_max_per_address: r.ranged("SIGNUP_MAX_PER_ADDRESS", 20, 1, 1_000_000)?,
            signup_window_seconds: r.ranged("SIGNUP_WINDOW_SECONDS", 3600, 1, 86400)?,
            bcrypt_queue: r.ranged("BCRYPT_QUEUE", 16, 0, 100_000)?,
            trusted_proxies: r
                .string("TRUSTED_PROXIES", "")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse().map_err(|_| {
                        invalid("TRUSTED_PROXIES", format!("{s:?} is not an IP address"))
                    })
                })
                .collect::<Result<_, _>>()?,
            poke_limit: r.ranged("POKE_LIMIT", 10, 1, 10_000)?,
            poke_window_seconds: r.ranged("POKE_WINDOW_SECONDS", 60, 1, 86400)?,
            invitation_sender_limit: r.ranged("INVITATION_SENDER_LIMIT", 20, 1, 10_000)?,
            invitation_address_limit: r.ranged("INVITATION_ADDRESS_LIMIT", 3, 1, 10_000)?,
            invitation_window_seconds: r.ranged(
                "INVITATION_WINDOW_SECONDS",
                86_400,
                1,
                30 * 86_400,
            )?,
            sendgrid_api_key: r.optional("SENDGRID_API_KEY").map(Into::into),
            sendgrid_api_url: parse::url_opt(&r, "SENDGRID_API_URL", &["http", "https"])?
                .unwrap_or_else(|| "https://api.sendgrid.com/v3/mail/send".into()),
            email_from_address: r.string("EMAIL_FROM_ADDRESS", "noreply@inside.app"),
            email_from_name: r.string("EMAIL_FROM_NAME", "Inside"),
            ecapa_model_dir: r.optional("ECAPA_MODEL_DIR").map(PathBuf::from),
            max_audio_seconds: r.float("MAX_AUDIO_SECONDS", 600.0, 1.0, 86400.0)?,
            speaker_match_threshold: r.float("SPEAKER_MATCH_THRESHOLD", 0.25, -1.0, 1.0)?,
            report_job_poll_ms: r.ranged("REPORT_JOB_POLL_MS", 500, 10, 60_000)?,
            report_job_ack_wait_s: r.ranged("REPORT_JOB_ACK_WAIT_SECONDS", 30, 1, 3600)?,
            report_wait_seconds: r.float("REPORT_WAIT_SECONDS", 5.0, 0.0, 600.0)?,
            report_job_retry_ms: r.ranged("REPORT_JOB_RETRY_MS", 1_000, 1, 600_000)?,
        };
        settings.validate(secret_key.as_deref())
    }

    fn validate(self, secret_key: Option<&str>) -> Result<Self, SettingsError> {
        if self.algorithm != "HS256" {
            return Err(invalid("ALGORITHM", "only HS256 is supported"));
        }
        let (tcp, ws) = (
            self.http_max_connections_per_client,
            self.websocket_max_sockets_per_client,
        );
        // every socket is a TCP connection: a smaller TCP cap would make the socket cap a lie
        if tcp > 0 && (ws == 0 || ws > tcp) {
            return Err(invalid(
                "HTTP_MAX_CONNECTIONS_PER_CLIENT",
                format!(
                    "{tcp} is below WEBSOCKET_MAX_SOCKETS_PER_CLIENT ({ws}, 0 = none); \
                     raise it or set it to 0"
                ),
            ));
        }
        if self.presence_ttl_seconds < 2.0 * self.presence_heartbeat_seconds {
            return Err(invalid(
                "PRESENCE_TTL_SECONDS",
                format!(
                    "{} is under twice PRESENCE_HEARTBEAT_SECONDS ({}): one late announcement \
                     would drop live participants",
                    self.presence_ttl_seconds, self.presence_heartbeat_seconds
                ),
            ));
        }
        if self.debug {
            return Ok(self);
        }
        match secret_key {
            None if self.database_kind == DatabaseKind::Postgres => Err(invalid(
                "SECRET_KEY",
                "missing while DEBUG=false with PostgreSQL; \
                 generate one with `openssl rand -hex 32`",
            )),
            Some(k) => match secret::weakness(k) {
                Some(why) => Err(invalid(
                    "SECRET_KEY",
                    format!(
                        "{why}; it signs every access token, so generate a random one \
                         with `openssl rand -hex 32` (or set DEBUG=true for local development)"
                    ),
                )),
                None => Ok(self),
            },
            None => Ok(self),
        }
    }

    /// Refuses a gateway or worker that would keep its rate limits to itself: with
    /// `NATS_URL`, processes share the work, so nudge, login and poke limits must live in
    /// Redis (`REDIS_URL`) to hold across them, unless `ALLOW_PROCESS_LOCAL_LIMITS=true`
    /// says per-process limits are wanted. Not part of [`Settings::from_map`]: a tool that
    /// limits nothing (`worker tap`, which researchers run) needs no Redis.
    pub fn require_shared_limits(&self) -> Result<(), SettingsError> {
        if self.nats_url.is_some() && self.redis_url.is_none() && !self.allow_process_local_limits {
            return Err(invalid(
                "REDIS_URL",
                "missing while NATS_URL is set: every gateway and worker would keep its own \
                 nudge, login and poke limits, so a client spreading over N processes gets N \
                 times each limit. Set REDIS_URL, or ALLOW_PROCESS_LOCAL_LIMITS=true if \
                 per-process limits are wanted",
            ));
        }
        Ok(())
    }

    /// Nudge limit window; `None` when `NUDGE_RATE_LIMIT_SECONDS=0` turns it off.
    pub fn nudge_window(&self) -> Option<std::time::Duration> {
        (self.nudge_rate_limit_seconds > 0.0)
            .then(|| std::time::Duration::from_secs_f64(self.nudge_rate_limit_seconds))
    }

    /// The history a reconnecting socket resumes from: (events, max age); `None` when
    /// `WEBSOCKET_RESUME_EVENTS=0` turns it off.
    pub fn resume_window(&self) -> Option<(usize, std::time::Duration)> {
        (self.websocket_resume_events > 0).then(|| {
            (
                self.websocket_resume_events,
                std::time::Duration::from_secs_f64(self.websocket_resume_seconds),
            )
        })
    }
}

/// Two connections per core: measured fastest for short queries (fewer
/// PostgreSQL backends contending for the same cores); see README benchmarks.
fn default_pool_size() -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (2 * cores as u32).max(4)
}

fn invalid(name: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        name,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests;
