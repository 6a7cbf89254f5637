//! Who does a piece of work for now, across processes sharing the limiter's Redis: a key
//! naming its owner, taken with `SET NX PX`, kept alive only by that owner and given up only in
//! the owner's name (Lua compare-and-pexpire, compare-and-delete), so a process that finds the
//! owner gone cannot delete a claim someone else has taken since. The workers use it to send
//! each session's live audio to one of them. In-memory (embedded default) there is one process
//! and nothing to share: no claims.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::event_log::Script;
use crate::limiter::Limiter;
use crate::Result;

/// KEYS: claim; ARGV: owner, ttl ms. Extends the claim only while it is still the owner's.
const KEEP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS: claim; ARGV: owner. Deletes the claim only while it still names that owner.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Who holds a claim, and for how much longer unless they keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    pub left: Duration,
}

/// Claims under the limiter's key prefix; cheap to clone.
#[derive(Clone)]
pub struct Claims {
    conn: ConnectionManager,
    prefix: String,
    keep: Arc<Script>,
    release: Arc<Script>,
}

impl Claims {
    /// `None` for the in-memory limiter: one process needs no claims.
    pub fn from_limiter(limiter: &Limiter) -> Option<Self> {
        match limiter {
            Limiter::Redis { conn, prefix, .. } => Some(Self {
                conn: conn.clone(),
                prefix: prefix.clone(),
                keep: Arc::new(Script::new(KEEP)),
                release: Arc::new(Script::new(RELEASE)),
            }),
            Limiter::Memory(_) => None,
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// Takes `key` for `owner` for `ttl` unless someone holds it; either way, who holds it now.
    /// One round trip, atomic: the owner read is the one the `SET NX` left.
    pub async fn claim(&self, key: &str, owner: &str, ttl: Duration) -> Result<Claim> {
        let full = self.full(key);
        let (holder, ttl_ms): (String, i64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&full)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ms(ttl))
            .ignore()
            .cmd("GET")
            .arg(&full)
            .cmd("PTTL")
            .arg(&full)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(Claim {
            owner: holder,
            left: Duration::from_millis(ttl_ms.max(0) as u64),
        })
    }

    /// Extends `owner`'s claim on `key` to `ttl` from now; false when it is no longer theirs.
    pub async fn keep(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let full = self.full(key);
        let ttl = ms(ttl).to_string();
        let kept: i64 = self
            .keep
            .run(&self.conn, &[&full], &[owner.as_bytes(), ttl.as_bytes()])
            .await?;
        Ok(kept == 1)
    }

    /// Gives up `key` if `owner` still holds it (theirs to give up, or found gone); false when
    /// someone else holds it, or nobody does.
    pub async fn release(&self, key: &str, owner: &str) -> Result<bool> {
        let full = self.full(key);
        let released: i64 = self
            .release
            .run(&self.conn, &[&full], &[owner.as_bytes()])
            .await?;
        Ok(released == 1)
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn claims(prefix: &str) -> Claims {
        let limiter = Limiter::redis("redis://127.0.0.1:6379", prefix)
            .await
            .expect("Redis on 127.0.0.1:6379 (scripts/services starts it)");
        Claims::from_limiter(&limiter).expect("a Redis limiter")
    }

    #[tokio::test]
    async fn a_claim_is_kept_and_released_only_in_its_owners_name() {
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let (a, b) = (claims(&prefix).await, claims(&prefix).await);
        let ttl = Duration::from_secs(30);
        let first = a.claim("k", "a", ttl).await.expect("claim");
        assert_eq!(first.owner, "a");
        assert!(first.left > Duration::from_secs(29));
        assert_eq!(b.claim("k", "b", ttl).await.expect("claim").owner, "a");
        assert!(!b.keep("k", "b", ttl).await.expect("keep"));
        assert!(!b.release("k", "b").await.expect("release"));
        assert!(a.keep("k", "a", ttl).await.expect("keep"));
        // b finds a gone: it may give up a's claim, and then take it
        assert!(b.release("k", "a").await.expect("release"));
        assert_eq!(b.claim("k", "b", ttl).await.expect("claim").owner, "b");
        assert!(!a.keep("k", "a", ttl).await.expect("keep"));
    }
}
