//! The highest feature-frame `seq` this socket got onto the bus, told to the phone in
//! `server.pong` and kept with the session's history so that the next socket's
//! `server.joined` says it too, whichever gateway it lands on: what the phone sent after it
//! was not accepted and should be sent again.
//!
//! In memory (the embedded default) each accepted seq is a map update. In Redis it is written
//! at most every `FLUSH_EVERY` per socket by a task spawned only while frames flow, and once
//! more when the socket ends: no round trip on the frame path.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inside_store::event_log::EventLog;
use uuid::Uuid;

/// How stale the shared value may be while frames flow.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// No seq yet.
const NONE: i64 = i64::MIN;

pub(super) struct FrameSeqs(Arc<Shared>);

struct Shared {
    log: EventLog,
    sid: Uuid,
    uid: Uuid,
    /// Highest seq known: the stored one at join, raised by this socket's frames.
    latest: AtomicI64,
    /// Highest seq written to the shared store.
    stored: AtomicI64,
    /// A flush is scheduled.
    pending: AtomicBool,
}

impl FrameSeqs {
    /// `stored`: what the store held when the socket joined.
    pub(super) fn new(log: EventLog, sid: Uuid, uid: Uuid, stored: Option<i64>) -> Self {
        let stored = stored.unwrap_or(NONE);
        Self(Arc::new(Shared {
            log,
            sid,
            uid,
            latest: AtomicI64::new(stored),
            stored: AtomicI64::new(stored),
            pending: AtomicBool::new(false),
        }))
    }

    /// A frame with `seq` was published to the bus.
    pub(super) fn accepted(&self, seq: Option<i64>) {
        let Some(seq) = seq else { return };
        let shared = &self.0;
        if shared.latest.fetch_max(seq, Ordering::Relaxed) >= seq {
            return;
        }
        match &shared.log {
            EventLog::Off | EventLog::OnBus(None) => {}
            EventLog::Memory(log) => {
                log.note_frame_seq(shared.sid, shared.uid, seq);
                shared.stored.fetch_max(seq, Ordering::Relaxed);
            }
            EventLog::OnBus(Some(_)) => {
                if !shared.pending.swap(true, Ordering::AcqRel) {
                    tokio::spawn(flush_later(self.0.clone()));
                }
            }
        }
    }

    /// The highest seq accepted for this user in this session, as far as this socket knows.
    pub(super) fn last(&self) -> Option<i64> {
        let v = self.0.latest.load(Ordering::Relaxed);
        (v != NONE).then_some(v)
    }
}

impl Drop for FrameSeqs {
    fn drop(&mut self) {
        let shared = &self.0;
        if shared.log.keeps_frame_seqs_remotely()
            && shared.latest.load(Ordering::Relaxed) > shared.stored.load(Ordering::Relaxed)
        {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(flush(self.0.clone()));
            }
        }
    }
}

async fn flush_later(shared: Arc<Shared>) {
    tokio::time::sleep(FLUSH_EVERY).await;
    shared.pending.store(false, Ordering::Release);
    flush(shared).await;
}

async fn flush(shared: Arc<Shared>) {
    let seq = shared.latest.load(Ordering::Relaxed);
    if seq <= shared.stored.load(Ordering::Relaxed) {
        return;
    }
    match shared.log.note_frame_seq(shared.sid, shared.uid, seq).await {
        Ok(()) => {
            shared.stored.fetch_max(seq, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(sid = %shared.sid, error = %e, "storing the last accepted frame seq failed")
        }
    }
}
