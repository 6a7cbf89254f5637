//! Whether the account behind a valid access token still exists. A token
//! outlives a deleted account by up to its lifetime, so every authenticated
//! request checks; a small in-process cache keeps that to one primary-key
//! lookup per user every few seconds.
//!
//! Bounds: on the gateway that deleted the account, its tokens are refused
//! from the moment the deletion answers (the entry turns `Gone` before the
//! 204 leaves). Another gateway may have seen the account alive up to
//! [`ALIVE_FOR`] earlier, so it accepts the old token for at most that long.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use inside_store::Store;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// How long a positive answer is trusted: the cross-gateway bound above.
pub const ALIVE_FOR: Duration = Duration::from_secs(5);

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 100_000;

#[derive(Debug, Clone, Copy)]
enum Seen {
    /// Exists; trusted until then.
    Alive(Instant),
    /// Deleted (ids are never reused); kept until then, when every access
    /// token issued before the deletion has expired anyway.
    Gone(Instant),
}

pub struct LiveAccounts {
    seen: DashMap<Uuid, Seen>,
    /// How long a `Gone` entry is kept: the access-token lifetime.
    gone_for: Duration,
}

impl LiveAccounts {
    pub fn new(access_ttl: Duration) -> Self {
        Self {
            seen: DashMap::new(),
            gone_for: access_ttl.max(ALIVE_FOR),
        }
    }

    /// 401 unless account `id` exists.
    pub async fn require(&self, store: &Store, id: Uuid) -> ApiResult<()> {
        let now = Instant::now();
        match self.seen.get(&id).map(|e| *e) {
            Some(Seen::Alive(until)) if until > now => return Ok(()),
            Some(Seen::Gone(until)) if until > now => return Err(gone()),
            _ => {}
        }
        let exists = store.user_exists(id).await?;
        if self.seen.len() > SWEEP_AT {
            self.seen.retain(|_, s| match s {
                Seen::Alive(t) | Seen::Gone(t) => *t > now,
            });
        }
        if !exists {
            self.seen.insert(id, Seen::Gone(now + self.gone_for));
            return Err(gone());
        }
        // A deletion that finished while this lookup ran has written `Gone`:
        // never turn that back into `Alive`.
        self.seen
            .entry(id)
            .and_modify(|s| {
                if let Seen::Alive(_) = s {
                    *s = Seen::Alive(now + ALIVE_FOR);
                }
            })
            .or_insert(Seen::Alive(now + ALIVE_FOR));
        Ok(())
    }

    /// Account `id` was deleted: its tokens are refused from now on.
    pub fn forget(&self, id: Uuid) {
        self.seen
            .insert(id, Seen::Gone(Instant::now() + self.gone_for));
    }
}

fn gone() -> ApiError {
    ApiError::unauthorized("user no longer exists")
}
