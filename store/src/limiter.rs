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
        /// Until when each key `once_per` found taken stays taken (its TTL, read in the same
        /// round trip): nobody can take it before then (`NX`), so checks of it answer from
        /// here instead of asking Redis once per frame.
        taken: Arc<DashMap<String, Instant>>,
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
            taken: Arc::new(DashMap::new()),
        })
    }

    /// True when this process already knows `once_per(key)` would refuse (Redis: a refusal or
    /// claim it saw, whose window has not run out), so a caller can skip the round trip and
    /// the task around it. False when unknown or in memory (where `once_per` costs no wait).
    pub fn taken_here(&self, key: &str) -> bool {
        match self {
            Limiter::Redis { taken, .. } => {
                taken.get(key).is_some_and(|until| *until > Instant::now())
            }
            Limiter::Memory(_) => false,
        }
    }

    /// Remembers that `key` is taken for `left` more (learned by a caller that checked it in
    /// Redis itself, in a script of its own).
    pub fn note_taken(&self, key: &str, left: Duration) {
        if let Limiter::Redis { taken, .. } = self {
            let now = Instant::now();
            sweep_taken(taken, now);
            if !left.is_zero() {
                taken.insert(key.to_string(), now + left);
            }
        }
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
            Limiter::Redis {
                conn,
                prefix,
                taken,
            } => {
                let now = Instant::now();
                if taken.get(key).is_some_and(|until| *until > now) {
                    return Ok(false);
                }
                let ms = window.as_millis().max(1) as u64;
                let full = format!("{prefix}:{key}");
                let (set, ttl_ms): (Option<String>, i64) = redis::pipe()
                    .cmd("SET")
                    .arg(&full)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .cmd("PTTL")
                    .arg(&full)
                    .query_async(&mut conn.clone())
                    .await?;
                sweep_taken(taken, now);
                // A refusal is remembered until the key's expiry; so is our own claim, which
                // nobody else can take before then either.
                if ttl_ms > 0 {
                    taken.insert(key.to_string(), now + Duration::from_millis(ttl_ms as u64));
                }
                Ok(set.is_some())
            }
        }
    }

    /// Marks `key` taken for `window` from now, whoever holds it (a caller that judged its
    /// window elsewhere, telling the processes that ask here).
    pub async fn hold(&self, key: &str, window: Duration) -> Result<()> {
        match self {
            Limiter::Memory(map) => {
                let now = Instant::now();
                sweep(map, now);
                map.insert(key.to_string(), (1, now + window));
            }
            Limiter::Redis { conn, prefix, .. } => {
                let ms = window.as_millis().max(1) as u64;
                let _: () = redis::cmd("SET")
                    .arg(format!("{prefix}:{key}"))
                    .arg(1)
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn.clone())
                    .await?;
            }
        }
        Ok(())
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
            Limiter::Redis { conn, prefix, .. } => {
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

    /// Forgets `key` (e.g. failed logins after a success). Only in this process for what
    /// `once_per` remembers locally: `once_per` keys are not meant to be reset.
    pub async fn reset(&self, key: &str) -> Result<()> {
        match self {
            Limiter::Memory(map) => {
                map.remove(key);
            }
            Limiter::Redis {
                conn,
                prefix,
                taken,
            } => {
                taken.remove(key);
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

fn sweep_taken(map: &DashMap<String, Instant>, now: Instant) {
    if map.len() > SWEEP_AT {
        map.retain(|_, until| *until > now);
    }
}

fn sweep(map: &DashMap<String, (u64, Instant)>, now: Instant) {
    if map.len() > SWEEP_AT {
        map.retain(|_, (_, until)| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS: &str = "redis://127.0.0.1:6379";

    async fn process(prefix: &str) -> Limiter {
        Limiter::redis(REDIS, prefix)
            .await
            .expect("Redis on 127.0.0.1:6379 (scripts/services starts it)")
    }

    #[tokio::test]
    async fn once_per_is_shared_by_processes_and_reopens_after_the_window() {
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let (a, b) = (process(&prefix).await, process(&prefix).await);
        let window = Duration::from_millis(400);
        assert!(a.once_per("nudge:x", window).await.unwrap());
        assert!(!b.once_per("nudge:x", window).await.unwrap());
        assert!(!a.once_per("nudge:x", window).await.unwrap());
        assert!(a.taken_here("nudge:x") && b.taken_here("nudge:x"));
        assert!(b.once_per("nudge:y", window).await.unwrap());
        tokio::time::sleep(window + Duration::from_millis(50)).await;
        assert!(!a.taken_here("nudge:x"));
        // whoever asks first after the window gets it, once
        assert!(b.once_per("nudge:x", window).await.unwrap());
        assert!(!a.once_per("nudge:x", window).await.unwrap());
    }

    #[tokio::test]
    async fn a_refused_key_is_answered_locally_until_it_expires() {
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let (a, b) = (process(&prefix).await, process(&prefix).await);
        let window = Duration::from_secs(30);
        assert!(a.once_per("nudge:x", window).await.unwrap());
        assert!(!b.once_per("nudge:x", window).await.unwrap());
        // The key vanishes from Redis behind their backs: b, which learned the key's expiry
        // with its refusal, goes on refusing without asking; a process that never asked sees
        // the key free.
        let client = redis::Client::open(REDIS).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{prefix}:nudge:x"))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(!b.once_per("nudge:x", window).await.unwrap());
        assert!(process(&prefix)
            .await
            .once_per("nudge:x", window)
            .await
            .unwrap());
    }
}
