//! bcrypt on bounded pools of blocking threads. A hash at cost 12 takes
//! about a quarter second of CPU; left unbounded, a burst of signups would
//! take every core from the async runtime and queue logins behind them.
//!
//! Two lanes: hashing new passwords (signup) and verifying them (login), each
//! with its own threads and its own bounded queue, so a signup flood never
//! delays a login by more than the CPU it shares. A job that finds its lane's
//! queue full is refused at once with 503 `busy` and `Retry-After`, instead of
//! waiting for seconds behind the flood.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::ApiError;

/// bcrypt reads only this many bytes of a password.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Seconds a client turned away by a full queue is asked to wait.
const BUSY_RETRY_AFTER_S: u64 = 1;

#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    signups: Lane,
    logins: Lane,
    /// Verified against when the email is unknown, so both cost the same.
    dummy_hash: Arc<String>,
    /// bcrypt verifications actually run (tests prove throttled logins never get here).
    verifications: Arc<AtomicU64>,
}

/// How many hashes run at once and wait, per lane.
#[derive(Debug, Clone, Copy)]
pub struct HasherPool {
    pub hash_threads: usize,
    pub verify_threads: usize,
    /// Jobs that may wait for a thread, per lane, beyond those running.
    pub queue: usize,
}

impl HasherPool {
    /// `cores`: the machine's. Verifying gets every core but one (the async
    /// runtime's); hashing gets half of that, so signups can never take all
    /// of the CPU that logins need.
    pub fn for_cores(cores: usize, queue: usize) -> Self {
        let verify_threads = cores.saturating_sub(1).max(1);
        Self {
            hash_threads: (verify_threads / 2).max(1),
            verify_threads,
            queue,
        }
    }
}

#[derive(Clone)]
struct Lane {
    /// A permit per thread that may run bcrypt now.
    running: Arc<Semaphore>,
    /// A permit per job admitted (running or waiting); none left: `busy`.
    admitted: Arc<Semaphore>,
}

impl Lane {
    fn new(threads: usize, queue: usize) -> Self {
        let threads = threads.max(1);
        Self {
            running: Arc::new(Semaphore::new(threads)),
            admitted: Arc::new(Semaphore::new(threads + queue)),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy {
                retry_after_s: BUSY_RETRY_AFTER_S,
            })?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        // The permits go with the work: a caller that gives up does not free a
        // thread that is still hashing.
        tokio::task::spawn_blocking(move || {
            let _held = (admitted, running);
            f()
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }
}

impl PasswordHasher {
    pub fn new(cost: u32, pool: HasherPool) -> Result<Self, ApiError> {
        let dummy = bcrypt::hash("not-a-real-password", cost).map_err(ApiError::internal)?;
        Ok(Self {
            cost,
            signups: Lane::new(pool.hash_threads, pool.queue),
            logins: Lane::new(pool.verify_threads, pool.queue),
            dummy_hash: Arc::new(dummy),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    pub async fn hash(&self, password: &str) -> Result<String, ApiError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::validation("password must be at most 72 bytes"));
        }
        let (pw, cost) = (password.to_string(), self.cost);
        self.signups.run(move || bcrypt::hash(pw, cost)).await
    }

    /// Checks `password` against `hash`, or against a dummy hash when there is
    /// no user, so an unknown email takes as long as a wrong password.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash
            .map(str::to_string)
            .unwrap_or_else(|| self.dummy_hash.to_string());
        // Still spend the time on an over-long password; it can never have been stored.
        let over_long = password.len() > MAX_PASSWORD_BYTES;
        let pw = if over_long {
            "x".to_string()
        } else {
            password.to_string()
        };
        let count = self.verifications.clone();
        let ok = self
            .logins
            .run(move || {
                count.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("inside_bcrypt_verifications_total").increment(1);
                bcrypt::verify(pw, &hash)
            })
            .await?;
        Ok(ok && known && !over_long)
    }

    /// bcrypt verifications run since start-up.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_at_once_and_verification_has_its_own_lane() {
        let hasher = PasswordHasher::new(
            10,
            HasherPool {
                hash_threads: 1,
                verify_threads: 1,
                queue: 1,
            },
        )
        .unwrap();
        let hash = hasher.hash("correct horse").await.unwrap();
        // One hashing, one waiting: the lane is full.
        let busy = (0..2).map(|_| {
            let h = hasher.clone();
            tokio::spawn(async move { h.hash("another password").await })
        });
        let busy: Vec<_> = busy.collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(matches!(
            hasher.hash("third password").await,
            Err(ApiError::Busy { .. })
        ));
        // Verification is not queued behind the hashing.
        assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
        assert_eq!(hasher.verifications(), 1);
        for h in busy {
            assert!(h.await.unwrap().is_ok());
        }
    }
}
