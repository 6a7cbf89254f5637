//! Rate limits shared by every process: Redis when `REDIS_URL` is set
//! (`SET NX PX` for one-per-window, `INCR` + `PEXPIRE` for counted windows),
//! an in-memory map in the embedded default.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::Result;

/// Outcome of a counted hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    Allowed,
    /// Over the limit; try again after this long.
    Limited(Duration),
}

#[derive(Clone)]
pub enum Limiter {
    Memory(Arc<DashMap<String, (u64, Instant)>>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
}

/// Memory entries kept before expired ones are swept.
const SWEEP_AT: usize = 100_000;

impl Limiter {
    pub fn memory() -> Self {
        Limiter::Memory(Arc::new(DashMap::new()))
    }

    /// True when a check is a network round trip (Redis), not a map lookup.
    pub fn is_remote(&self) -> bool {
        matches!(self, Limiter::Redis { .. })
    }

    /// `prefix` namespaces keys so tests (or deployments) can share one Redis.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        // Fail fast at start-up on a wrong URL instead of retrying for minutes.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(3))
            .set_response_timeout(Duration::from_secs(3))
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::IoError, "timed out connecting to Redis"))
        })??;
        Ok(Limiter::Redis {
            conn,
            prefix: prefix.to_string(),
        })
    }

    /// True once per `window` for `key`, across every process sharing the limiter.
    pub async fn once_per(&self, key: &str, window: Duration) -> Result<bool> {
        match self {
            Limiter::Memory(map) => {
                let now = Instant::now();
                sweep(map, now);
                let mut fresh = false;
                map.entry(key.to_string())
                    .and_modify(|(n, until)| {
                        if *until <= now {
                            *n = 1;
                            *until = now + window;
                            fresh = true;
                        }
                    })
                    .or_insert_with(|| {
                        fresh = true;
                        (1, now + window)
                    });
                Ok(fresh)
            }
            Limiter::Redis { conn, prefix } => {
                let ms = window.as_millis().max(1) as u64;
                let set: Option<String> = redis::cmd("SET")
                    .arg(format!("{prefix}:{key}"))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn.clone())
                    .await?;
                Ok(set.is_some())
            }
        }
    }

    /// Counts a hit on `key`; over `limit` hits in a window is `Limited`.
    pub async fn hit(&self, key: &str, limit: u64, window: Duration) -> Result<Hit> {
        let (count, left) = match self {
            Limiter::Memory(map) => {
                let now = Instant::now();
                sweep(map, now);
                let mut entry = map.entry(key.to_string()).or_insert((0, now + window));
                if entry.1 <= now {
                    *entry = (0, now + window);
                }
                entry.0 += 1;
                (entry.0, entry.1.saturating_duration_since(now))
            }
            Limiter::Redis { conn, prefix } => {
                let key = format!("{prefix}:{key}");
                let ms = window.as_millis().max(1) as u64;
                let (count, ttl): (u64, i64) = redis::pipe()
                    .atomic()
                    .cmd("INCR")
                    .arg(&key)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ms)
                    .arg("NX")
                    .ignore()
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut conn.clone())
                    .await?;
                (count, Duration::from_millis(ttl.max(0) as u64))
            }
        };
        Ok(if count > limit {
            Hit::Limited(left.max(Duration::from_secs(1)))
        } else {
            Hit::Allowed
        })
    }

    /// Forgets `key` (e.g. failed logins after a success).
    pub async fn reset(&self, key: &str) -> Result<()> {
        match self {
            Limiter::Memory(map) => {
                map.remove(key);
            }
            Limiter::Redis { conn, prefix } => {
                let _: i64 = redis::cmd("DEL")
                    .arg(format!("{prefix}:{key}"))
                    .query_async(&mut conn.clone())
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        if let Limiter::Redis { conn, .. } = self {
            let _: String = redis::cmd("PING").query_async(&mut conn.clone()).await?;
        }
        Ok(())
    }
}

fn sweep(map: &DashMap<String, (u64, Instant)>, now: Instant) {
    if map.len() > SWEEP_AT {
        map.retain(|_, (_, until)| *until > now);
    }
}
