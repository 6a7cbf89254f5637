//! bcrypt on a bounded pool of blocking threads. A hash at cost 12 takes
//! about a quarter second of CPU; left unbounded, a burst of logins would
//! take every core from the async runtime.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::ApiError;

/// bcrypt reads only this many bytes of a password.
pub const MAX_PASSWORD_BYTES: usize = 72;

#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    permits: Arc<Semaphore>,
    /// Verified against when the email is unknown, so both cost the same.
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    /// `threads`: how many hashes may run at once.
    pub fn new(cost: u32, threads: usize) -> Result<Self, ApiError> {
        let dummy = bcrypt::hash("not-a-real-password", cost).map_err(ApiError::internal)?;
        Ok(Self {
            cost,
            permits: Arc::new(Semaphore::new(threads.max(1))),
            dummy_hash: Arc::new(dummy),
        })
    }

    pub async fn hash(&self, password: &str) -> Result<String, ApiError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::validation("password must be at most 72 bytes"));
        }
        let (pw, cost) = (password.to_string(), self.cost);
        self.run(move || bcrypt::hash(pw, cost)).await
    }

    /// Checks `password` against `hash`, or against a dummy hash when there is
    /// no user, so an unknown email takes as long as a wrong password.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash
            .map(str::to_string)
            .unwrap_or_else(|| self.dummy_hash.to_string());
        if password.len() > MAX_PASSWORD_BYTES {
            // Still spend the time; such a password can never have been stored.
            let _ = self.run(move || bcrypt::verify("x", &hash)).await;
            return Ok(false);
        }
        let pw = password.to_string();
        let ok = self.run(move || bcrypt::verify(pw, &hash)).await?;
        Ok(ok && known)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }
}
