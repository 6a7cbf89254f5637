//! Reservations: a slot in one or more counted windows taken atomically
//! *before* the work it guards (a password check), so concurrent requests
//! cannot all pass a look-then-count limit. Work that should not count gives
//! its slot back; work that failed keeps it. Redis runs each step as one Lua
//! script; the memory map takes each counter under its entry lock.

use std::time::{Duration, Instant};

use crate::limiter::{Hit, Limiter};
use crate::Result;

/// Outcome of [`Limiter::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// A slot was taken in every counter; their counts now, in the order given.
    Granted(Vec<u64>),
    /// Some counter is full: nothing was taken; retry after this long.
    Limited(Duration),
}

/// Takes one slot in each `KEYS[i]` whose count is under `ARGV[i + 1]`, or none
/// at all; `ARGV[1]` is the window in milliseconds, started by a counter's first slot.
/// Answers `{1, count…}` or `{0, wait_ms}`.
const RESERVE: &str = r"
local window = tonumber(ARGV[1])
local wait = 0
for i, k in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', k) or '0')
  if n >= tonumber(ARGV[i + 1]) then
    local t = redis.call('PTTL', k)
    if t < 0 then t = window end
    if t > wait then wait = t end
  end
end
if wait > 0 then return {0, wait} end
local out = {1}
for i, k in ipairs(KEYS) do
  out[i + 1] = redis.call('INCR', k)
  if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, window) end
end
return out
";

/// Gives one slot back in each key that still holds one.
const RELEASE: &str = r"
for _, k in ipairs(KEYS) do
  if tonumber(redis.call('GET', k) or '0') > 0 then redis.call('DECR', k) end
end
return 0
";

impl Limiter {
    /// Takes a slot in every `(key, limit)` counter, or in none when any holds
    /// `limit` already. A counter's window starts with its first slot.
    pub async fn reserve(&self, slots: &[(&str, u64)], window: Duration) -> Result<Reservation> {
        match self {
            Limiter::Memory(map) => {
                let now = Instant::now();
                let mut counts = Vec::with_capacity(slots.len());
                let mut wait = None;
                for (key, limit) in slots {
                    // One entry lock at a time: two held at once can deadlock on a shard.
                    let mut entry = map.entry((*key).to_string()).or_insert((0, now + window));
                    if entry.1 <= now {
                        *entry = (0, now + window);
                    }
                    if entry.0 >= *limit {
                        wait = Some(entry.1.saturating_duration_since(now));
                        break;
                    }
                    entry.0 += 1;
                    counts.push(entry.0);
                }
                match wait {
                    None => Ok(Reservation::Granted(counts)),
                    Some(wait) => {
                        // Undo the slots taken before the full counter. Meanwhile a
                        // concurrent request may see one more than is held and be
                        // refused; never is one admitted over a limit.
                        let taken: Vec<&str> = slots[..counts.len()].iter().map(|s| s.0).collect();
                        self.release(&taken).await?;
                        Ok(Reservation::Limited(wait.max(Duration::from_secs(1))))
                    }
                }
            }
            Limiter::Redis { conn, prefix, .. } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RESERVE).arg(slots.len());
                for (key, _) in slots {
                    cmd.arg(format!("{prefix}:{key}"));
                }
                cmd.arg(window.as_millis().max(1) as u64);
                for (_, limit) in slots {
                    cmd.arg(*limit);
                }
                let out: Vec<i64> = cmd.query_async(&mut conn.clone()).await?;
                Ok(match out.split_first() {
                    Some((1, counts)) => {
                        Reservation::Granted(counts.iter().map(|c| (*c).max(0) as u64).collect())
                    }
                    _ => {
                        let ms = out.get(1).copied().unwrap_or(1000).max(0) as u64;
                        Reservation::Limited(Duration::from_millis(ms).max(Duration::from_secs(1)))
                    }
                })
            }
        }
    }

    /// Gives back a slot taken by [`Limiter::reserve`] in each of `keys`.
    pub async fn release(&self, keys: &[&str]) -> Result<()> {
        match self {
            Limiter::Memory(map) => {
                for key in keys {
                    if let Some(mut entry) = map.get_mut(*key) {
                        entry.0 = entry.0.saturating_sub(1);
                    }
                }
            }
            Limiter::Redis { conn, prefix, .. } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RELEASE).arg(keys.len());
                for key in keys {
                    cmd.arg(format!("{prefix}:{key}"));
                }
                let _: i64 = cmd.query_async(&mut conn.clone()).await?;
            }
        }
        Ok(())
    }

    /// The count of `key` in its current window (0 when none).
    pub async fn count(&self, key: &str) -> Result<u64> {
        match self {
            Limiter::Memory(map) => {
                let now = Instant::now();
                Ok(map.get(key).filter(|e| e.1 > now).map_or(0, |e| e.0))
            }
            Limiter::Redis { conn, prefix, .. } => {
                let n: Option<u64> = redis::cmd("GET")
                    .arg(format!("{prefix}:{key}"))
                    .query_async(&mut conn.clone())
                    .await?;
                Ok(n.unwrap_or(0))
            }
        }
    }

    /// Passes once per `period` for `key` (the first caller closes it); while
    /// closed, `Limited` with the time until it opens.
    pub async fn gate(&self, key: &str, period: Duration) -> Result<Hit> {
        match self {
            Limiter::Memory(map) => {
                let now = Instant::now();
                let mut entry = map.entry(key.to_string()).or_insert((0, now));
                if entry.1 > now {
                    return Ok(Hit::Limited(
                        entry
                            .1
                            .saturating_duration_since(now)
                            .max(Duration::from_secs(1)),
                    ));
                }
                *entry = (1, now + period);
                Ok(Hit::Allowed)
            }
            Limiter::Redis { conn, prefix, .. } => {
                let key = format!("{prefix}:{key}");
                let (set, ttl): (Option<String>, i64) = redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(period.as_millis().max(1) as u64)
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut conn.clone())
                    .await?;
                Ok(match set {
                    Some(_) => Hit::Allowed,
                    None => Hit::Limited(
                        Duration::from_millis(ttl.max(0) as u64).max(Duration::from_secs(1)),
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS: &str = "redis://127.0.0.1:6379";

    async fn backends() -> Vec<Limiter> {
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        vec![
            Limiter::memory(),
            Limiter::redis(REDIS, &prefix)
                .await
                .expect("Redis on 127.0.0.1:6379 (scripts/services starts it)"),
        ]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reservations_never_exceed_the_limit() {
        for limiter in backends().await {
            let mut tries = tokio::task::JoinSet::new();
            for _ in 0..100 {
                let l = limiter.clone();
                tries.spawn(async move {
                    l.reserve(&[("pair", 10), ("addr", 1000)], Duration::from_secs(60))
                        .await
                        .unwrap()
                });
            }
            let mut granted = 0;
            while let Some(outcome) = tries.join_next().await {
                if matches!(outcome.unwrap(), Reservation::Granted(_)) {
                    granted += 1;
                }
            }
            assert_eq!(granted, 10, "remote: {}", limiter.is_remote());
            // The refused took nothing from the other counter.
            assert_eq!(limiter.count("addr").await.unwrap(), 10);
            limiter.release(&["pair"]).await.unwrap();
            assert!(matches!(
                limiter
                    .reserve(&[("pair", 10)], Duration::from_secs(60))
                    .await
                    .unwrap(),
                Reservation::Granted(c) if c == [10]
            ));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gate_opens_once_per_period() {
        for limiter in backends().await {
            let period = Duration::from_secs(30);
            assert_eq!(limiter.gate("g", period).await.unwrap(), Hit::Allowed);
            assert!(matches!(
                limiter.gate("g", period).await.unwrap(),
                Hit::Limited(wait) if wait > Duration::from_secs(20)
            ));
        }
    }
}
