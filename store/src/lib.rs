//! Persistence of Inside. One sqlx code path (the `Any` driver) over two real
//! databases, PostgreSQL and SQLite, each with its own migrations; the durable
//! job queue; the rate limiter (Redis or in-memory); and the short per-session history of
//! realtime events a reconnecting socket resumes from (`event_log`). No SQL lives outside
//! this crate.

pub mod access;
mod compact;
pub mod directory;
mod error;
pub mod event_log;
pub mod events;
pub mod jobs;
pub mod limiter;
pub mod ownership;
pub mod pokes;
pub mod relationships;
pub mod reports;
pub mod reservations;
pub mod sessions;
pub mod sockets;
pub mod talk_time;
mod time;
pub mod tokens;
pub mod users;
pub mod voiceprints;

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use directory::SessionDirectory;
pub use error::StoreError;
pub use time::{decode_cursor, encode_cursor, from_micros, now_micros};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects; for SQLite, creates the file (and its folder) when missing.
    pub async fn connect(url: &str, max_connections: u32, echo: bool) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let mut options: AnyConnectOptions = url.parse()?;
        options = if echo {
            options.log_statements(tracing::log::LevelFilter::Info)
        } else {
            options.log_statements(tracing::log::LevelFilter::Trace)
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // SQLite has one writer; a few readers share WAL snapshots.
                Backend::Sqlite => max_connections.min(8),
                Backend::Postgres => max_connections,
            })
            // opened up front: a session's first frame should not wait for a connection's
            // handshake (SQLite's are cheap)
            .min_connections(match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => max_connections,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                             PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, backend })
    }

    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite://./data/x.db` → make sure `./data` exists and the file is created.
fn sqlite_url(url: &str) -> Result<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Corrupt(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}
