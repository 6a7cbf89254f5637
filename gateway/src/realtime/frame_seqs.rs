//! The highest feature-frame `seq` this socket got onto the bus, told to the phone in
//! `server.pong` and kept with the session's history so that the next socket's
//! `server.joined` says it too, whichever gateway it lands on: what the phone sent after it
//! was not accepted and should be sent again.
//!
//! In memory (the embedded default) each accepted seq is a map update. In Redis it is noted
//! for the history's writing task, which stores every socket's newest seq at most
//! `FLUSH_EVERY` after it was accepted, in one round trip for them all: no round trip, task
//! or timer on the frame path. When the socket ends they are written at once, for a phone that
//! reconnects to another gateway straight away.

use std::sync::atomic::{AtomicI64, Ordering};

use inside_store::event_log::EventLog;
use uuid::Uuid;

/// No seq yet.
const NONE: i64 = i64::MIN;

pub(super) struct FrameSeqs {
    log: EventLog,
    sid: Uuid,
    uid: Uuid,
    /// Highest seq known: the stored one at join, raised by this socket's frames.
    latest: AtomicI64,
    /// What the store held when the socket joined.
    joined: i64,
}

impl FrameSeqs {
    /// `stored`: what the store held when the socket joined.
    pub(super) fn new(log: EventLog, sid: Uuid, uid: Uuid, stored: Option<i64>) -> Self {
        let joined = stored.unwrap_or(NONE);
        Self {
            log,
            sid,
            uid,
            latest: AtomicI64::new(joined),
            joined,
        }
    }

    /// A frame with `seq` was published to the bus.
    pub(super) fn accepted(&self, seq: Option<i64>) {
        let Some(seq) = seq else { return };
        if self.latest.fetch_max(seq, Ordering::Relaxed) < seq {
            self.log.note_frame_seq_soon(self.sid, self.uid, seq);
        }
    }

    /// The highest seq accepted for this user in this session, as far as this socket knows.
    pub(super) fn last(&self) -> Option<i64> {
        let v = self.latest.load(Ordering::Relaxed);
        (v != NONE).then_some(v)
    }
}

impl Drop for FrameSeqs {
    fn drop(&mut self) {
        // only a socket that raised the seq has anything waiting to be written
        if self.latest.load(Ordering::Relaxed) == self.joined || !self.log.writes_frame_seqs_later()
        {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let log = self.log.clone();
            runtime.spawn(async move { log.write_frame_seqs_now().await });
        }
    }
}
