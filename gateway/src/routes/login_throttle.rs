//! Login throttling that holds against concurrent guesses and cannot be turned
//! against the account's owner.
//!
//! Every attempt takes a slot, atomically and before bcrypt runs, in two counters:
//! one per (email, client address), limit `LOGIN_MAX_FAILURES`, and one per client
//! address over every email, limit `LOGIN_ADDRESS_MAX_FAILURES`, both per
//! `LOGIN_WINDOW_SECONDS`. A full counter answers 429 without touching the
//! database or bcrypt. A correct password gives the slots back (the pair's
//! counter starts again), a wrong one keeps them: only failures and attempts in
//! flight count. Failures of an email from every address are counted as well;
//! once they reach `LOGIN_MAX_FAILURES`, an address that has itself failed for
//! that email may try once per backoff period (1 s, doubling with each further
//! failure of the email, up to the window). An address that has not failed for
//! the email is never held back by others' failures, so a stranger cannot lock
//! the owner out.

use std::net::IpAddr;
use std::time::Duration;

use inside_store::limiter::Hit;
use inside_store::reservations::Reservation;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The counters of one login attempt.
pub struct LoginThrottle<'a> {
    state: &'a AppState,
    /// Attempts of this email from this address.
    pair: String,
    /// Attempts from this address, any email.
    address: String,
    /// Failures of this email, any address.
    email_failures: String,
    /// Once-per-backoff gate of this email from this address.
    gate: String,
}

impl<'a> LoginThrottle<'a> {
    pub fn new(state: &'a AppState, email: &str, ip: Option<IpAddr>) -> Self {
        // Hashed: the email is the caller's text, of any length, and keys are logged by Redis tools.
        let email = hex::encode(&Sha256::digest(email.as_bytes())[..16]);
        let addr = address_label(ip);
        Self {
            state,
            pair: format!("login:pair:{email}:{addr}"),
            address: format!("login:addr:{addr}"),
            email_failures: format!("login:email:{email}"),
            gate: format!("login:gate:{email}:{addr}"),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.state.settings.login_window_seconds)
    }

    fn per_pair(&self) -> u64 {
        u64::from(self.state.settings.login_max_failures)
    }

    /// Takes this attempt's slots, or refuses it with 429 before any password check.
    pub async fn admit(&self) -> ApiResult<()> {
        let limiter = &self.state.limiter;
        let slots = [
            (self.pair.as_str(), self.per_pair()),
            (
                self.address.as_str(),
                u64::from(self.state.settings.login_address_max_failures),
            ),
        ];
        let counts = match limiter.reserve(&slots, self.window()).await? {
            Reservation::Limited(wait) => return Err(rate_limited(wait)),
            Reservation::Granted(counts) => counts,
        };
        // Over one: this address has failed (or is trying at the same time) for this email.
        if counts.first().copied().unwrap_or(0) > 1 {
            let failures = limiter.count(&self.email_failures).await?;
            if failures >= self.per_pair() {
                let period = backoff(failures - self.per_pair(), self.window());
                if let Hit::Limited(wait) = limiter.gate(&self.gate, period).await? {
                    self.abandoned().await?;
                    return Err(rate_limited(wait));
                }
            }
        }
        Ok(())
    }

    /// The password was right: this address starts again for this email.
    pub async fn succeeded(&self) -> ApiResult<()> {
        self.state.limiter.reset(&self.pair).await?;
        self.state.limiter.release(&[&self.address]).await?;
        Ok(())
    }

    /// The password was wrong: the slots stay taken, and the email's failures grow.
    pub async fn failed(&self) -> ApiResult<()> {
        self.state
            .limiter
            .hit(&self.email_failures, u64::MAX, self.window())
            .await?;
        Ok(())
    }

    /// The attempt was not judged (refused by the gate, server busy, database
    /// error): its slots are given back.
    pub async fn abandoned(&self) -> ApiResult<()> {
        self.state
            .limiter
            .release(&[&self.pair, &self.address])
            .await?;
        Ok(())
    }
}

/// 1 s after the email's `excess`-th failure over the allowance, doubling, at most `window`.
fn backoff(excess: u64, window: Duration) -> Duration {
    let secs = 1u64.checked_shl(excess.min(40) as u32).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(window)
}

/// The client address as limiter keys name it.
pub fn address_label(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
}

fn rate_limited(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_s: wait.as_secs_f64().ceil() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_window() {
        let w = Duration::from_secs(300);
        assert_eq!(backoff(0, w), Duration::from_secs(1));
        assert_eq!(backoff(3, w), Duration::from_secs(8));
        assert_eq!(backoff(9, w), w);
        assert_eq!(backoff(u64::MAX, w), w);
    }
}
