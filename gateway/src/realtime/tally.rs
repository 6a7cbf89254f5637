//! What one socket published, for the report's barrier: a row in `session_sockets` from the
//! socket's join to its end, closed with the frames and audio segments the gateway put on the
//! bus for it. Nothing is published for a socket before its row exists, and the row is closed
//! only after the socket stopped reading and its audio decoder published its last segment, so
//! the counts are exactly what workers can receive for it.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inside_schemas::SessionStatus;
use inside_store::sockets::Counts;
use inside_store::{Store, StoreError};
use uuid::Uuid;

use crate::state::AppState;

/// How long a socket's end waits for its audio decoder to publish the rest of the stream.
const DECODER_DRAIN: Duration = Duration::from_secs(5);
const DECODER_POLL: Duration = Duration::from_millis(5);
/// Tries at recording a socket's end before the report's wait has to run out instead.
const CLOSE_TRIES: u32 = 3;

#[derive(Default)]
struct Published {
    frames: AtomicU64,
    segments: AtomicU64,
}

/// One socket's row and counts. Held by every idle socket, so it is kept to a few words: a
/// running audio decoder holds a clone of `published`, which is how the end knows to wait.
pub struct SocketTally {
    id: Uuid,
    store: Store,
    published: Arc<Published>,
}

/// What opening a socket's row found.
pub enum Opened {
    Open(SocketTally),
    /// The session was finalized before the row existed: the socket must not publish.
    Finalized,
}

impl SocketTally {
    /// Writes the socket's row, then reads the session again: a finalize that landed after the
    /// upgrade's check is seen here (its report then does not wait for this socket, which
    /// publishes nothing), a later one reaches the socket on the state subject, and its
    /// report waits for this row.
    pub async fn open(state: &AppState, sid: Uuid, uid: Uuid) -> Result<Opened, StoreError> {
        let id = Uuid::now_v7();
        state
            .store
            .open_socket(id, sid, uid, state.hub.gateway_id())
            .await?;
        let tally = SocketTally {
            id,
            store: state.store.clone(),
            published: Arc::default(),
        };
        if state.store.session(sid).await?.status != SessionStatus::Active {
            tally.close().await;
            return Ok(Opened::Finalized);
        }
        Ok(Opened::Open(tally))
    }

    /// A frame went out on the bus.
    pub fn frame(&self) {
        self.published.frames.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter an audio stream's decoder publishes through.
    pub fn audio(&self) -> AudioTally {
        AudioTally {
            published: self.published.clone(),
        }
    }

    /// Records the socket's end once its audio decoders are done (bounded).
    pub async fn close(self) {
        let deadline = tokio::time::Instant::now() + DECODER_DRAIN;
        // a decoder finishes within a few ms of its socket's end: polling costs no state
        while Arc::strong_count(&self.published) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(socket = %self.id, "an audio decoder outlived the socket's drain");
                break;
            }
            tokio::time::sleep(DECODER_POLL).await;
        }
        // pairs with the decoder's release of its clone: its last count is seen below
        fence(Ordering::Acquire);
        let counts = Counts {
            frames: self.published.frames.load(Ordering::Relaxed),
            segments: self.published.segments.load(Ordering::Relaxed),
        };
        for attempt in 1..=CLOSE_TRIES {
            match self.store.close_socket(self.id, counts).await {
                Ok(()) => return,
                Err(e) if attempt == CLOSE_TRIES => {
                    tracing::warn!(socket = %self.id, error = %e, "recording a socket's end failed; its session's report will wait and say so");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await,
            }
        }
    }
}

/// One audio stream's share of its socket's counts; the socket's end waits until it is dropped.
pub struct AudioTally {
    published: Arc<Published>,
}

impl AudioTally {
    /// A segment went out on the bus.
    pub fn segment(&self) {
        self.published.segments.fetch_add(1, Ordering::Relaxed);
    }
}
