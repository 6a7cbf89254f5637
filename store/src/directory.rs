//! `SessionDirectory`: a per-session cache of [`SessionAccess`] (status, members, consent and
//! research consent) in front of the database, so that validating a bus message or deciding
//! whether to copy it for researchers costs a hash lookup, not a query per frame.
//!
//! An entry is fresh for [`FRESH_FOR`]; a stale entry is still answered from while one
//! background query refreshes it, so the frame path never waits on the database except for the
//! first message of a session in this process, and not even then when the session was
//! [prefetched](SessionDirectory::prefetch) as its members joined. A change made through this process
//! ([`SessionDirectory::forget_relationship`]) applies at once; a change made elsewhere is seen
//! within `FRESH_FOR` plus one query. The cache is bounded ([`CAPACITY`] sessions).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::access::SessionAccess;
use crate::Store;
use uuid::Uuid;

/// How long an entry is answered without re-reading it.
pub const FRESH_FOR: Duration = Duration::from_secs(2);
/// Sessions held at most; past it, entries not used recently are forgotten.
pub const CAPACITY: usize = 16_384;

/// A cheap handle; clones share one cache.
#[derive(Clone)]
pub struct SessionDirectory(Arc<Inner>);

struct Inner {
    store: Store,
    fresh_for: Duration,
    entries: Mutex<HashMap<Uuid, Entry>>,
    /// Bumped by every forget: a read that started before it may predate the change it
    /// announces, so it is answered but not cached.
    generation: AtomicU64,
}

struct Entry {
    /// `None`: no such session (cached too, so a flood of one forged id costs one query).
    access: Option<Arc<SessionAccess>>,
    loaded: Instant,
    refreshing: bool,
}

impl SessionDirectory {
    pub fn new(store: Store) -> Self {
        Self::with_freshness(store, FRESH_FOR)
    }

    pub fn with_freshness(store: Store, fresh_for: Duration) -> Self {
        Self(Arc::new(Inner {
            store,
            fresh_for,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }))
    }

    /// The session as last read; `None` when it does not exist or cannot be read now (a
    /// message is then refused: failing closed).
    pub async fn get(&self, sid: Uuid) -> Option<Arc<SessionAccess>> {
        {
            let mut entries = lock(&self.0);
            if let Some(entry) = entries.get_mut(&sid) {
                if entry.loaded.elapsed() >= self.0.fresh_for && !entry.refreshing {
                    entry.refreshing = true;
                    let inner = self.0.clone();
                    tokio::spawn(async move {
                        load(&inner, sid).await;
                    });
                }
                return entry.access.clone();
            }
        }
        load(&self.0, sid).await.flatten()
    }

    /// Starts reading `sid` in the background unless it is cached, so that the session's
    /// first message does not wait on the database (a worker calls it when a member joins).
    pub fn prefetch(&self, sid: Uuid) {
        if lock(&self.0).contains_key(&sid) {
            return;
        }
        let inner = self.0.clone();
        tokio::spawn(async move {
            load(&inner, sid).await;
        });
    }

    /// Forgets what is cached for the sessions of relationship `rid` (after a consent change
    /// made in this process), so the next message reads it again.
    pub fn forget_relationship(&self, rid: Uuid) {
        self.0.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.0).retain(|_, e| e.access.as_ref().is_none_or(|a| a.relationship_id != rid));
    }

    /// The database behind the cache.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Sessions cached now.
    pub fn len(&self) -> usize {
        lock(&self.0).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, HashMap<Uuid, Entry>> {
    inner.entries.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads `sid` and caches it; `None` (outer) when the read failed, which is not cached.
async fn load(inner: &Inner, sid: Uuid) -> Option<Option<Arc<SessionAccess>>> {
    let generation = inner.generation.load(Ordering::SeqCst);
    let read = inner.store.session_access(sid).await;
    let mut entries = lock(inner);
    match read {
        Ok(access) => {
            let access = access.map(Arc::new);
            if inner.generation.load(Ordering::SeqCst) != generation {
                entries.remove(&sid);
                return Some(access);
            }
            if entries.len() >= CAPACITY && !entries.contains_key(&sid) {
                prune(&mut entries, inner.fresh_for);
            }
            entries.insert(
                sid,
                Entry {
                    access: access.clone(),
                    loaded: Instant::now(),
                    refreshing: false,
                },
            );
            Some(access)
        }
        Err(e) => {
            if let Some(entry) = entries.get_mut(&sid) {
                // the next use tries again
                entry.refreshing = false;
            }
            tracing::warn!(%sid, error = %e, "reading a session's members failed");
            None
        }
    }
}

/// Makes room: drops entries not refreshed within a few freshness periods (sessions no longer
/// in use), and everything when that is not enough, so a full cache costs one sweep per
/// `CAPACITY / 4` new sessions at most.
fn prune(entries: &mut HashMap<Uuid, Entry>, fresh_for: Duration) {
    let idle = fresh_for * 4;
    entries.retain(|_, e| e.loaded.elapsed() < idle);
    if entries.len() >= CAPACITY * 3 / 4 {
        entries.clear();
    }
}
