//! The embedded default's history: a map of sessions to their recent events, trimmed on every
//! append to the window, with idle sessions swept once per `max_age`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use inside_schemas::HistoryKind;
use uuid::Uuid;

use super::{decide, now_ms, Held, LoggedEvent, Snapshot, Window, KEEP_COUNTERS};

pub struct MemoryLog {
    window: Window,
    sessions: DashMap<Uuid, SessionLog>,
    /// Highest accepted frame seq per (session, user), and when it last moved.
    frame_seqs: DashMap<(Uuid, Uuid), (i64, Instant)>,
    started: Instant,
    /// Milliseconds after `started` of the last sweep.
    swept_at: AtomicU64,
}

/// One session's recent events. Their payloads are copied into one byte ring rather than
/// kept as the producer's shared buffers: the ring is trimmed by moving its start, where
/// dropping each old buffer touched memory gone cold since its append, and the buffer the
/// producer sends on stays its own (no shared count for the two threads to pass around).
#[derive(Default)]
struct SessionLog {
    head: u64,
    /// Last append; the counter is forgotten `KEEP_COUNTERS` after it.
    touched: Option<Instant>,
    entries: VecDeque<Entry>,
    /// The entries' payloads, oldest first, back to back.
    bytes: VecDeque<u8>,
}

/// An event of a [`SessionLog`]; its payload is the next `len` bytes of the ring.
struct Entry {
    id: u64,
    kind: HistoryKind,
    to: Option<Uuid>,
    len: usize,
    /// Append time, ms since the Unix epoch.
    at: u64,
}

impl SessionLog {
    fn push(&mut self, entry: Entry, payload: &[u8]) {
        self.bytes.extend(payload);
        self.entries.push_back(entry);
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes.drain(..e.len.min(self.bytes.len()));
        }
    }

    /// Drops what is over the window: the oldest beyond `events`, and those older than
    /// `max_age` (appends come in time order, so they are a prefix).
    fn trim(&mut self, window: &Window, fresh_from_ms: u64) {
        while self.entries.len() > window.events {
            self.pop_front();
        }
        while self.entries.front().is_some_and(|e| e.at < fresh_from_ms) {
            self.pop_front();
        }
    }

    /// The events after `since` with their append times, payloads copied out.
    fn after(&self, since: u64) -> Vec<Held> {
        let mut start = 0;
        let mut out = Vec::new();
        for e in &self.entries {
            if e.id > since {
                let payload: Vec<u8> = self.bytes.range(start..start + e.len).copied().collect();
                let event = LoggedEvent {
                    id: e.id,
                    kind: e.kind,
                    to: e.to,
                    payload: Bytes::from(payload),
                };
                out.push((event, e.at));
            }
            start += e.len;
        }
        out
    }
}

impl MemoryLog {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            sessions: DashMap::new(),
            frame_seqs: DashMap::new(),
            started: Instant::now(),
            swept_at: AtomicU64::new(0),
        }
    }

    pub fn append(&self, sid: Uuid, to: Option<Uuid>, kind: HistoryKind, payload: &[u8]) -> u64 {
        let now = Instant::now();
        self.maybe_sweep(now);
        let at = now_ms();
        let mut log = self.sessions.entry(sid).or_default();
        log.head += 1;
        log.touched = Some(now);
        let id = log.head;
        let entry = Entry {
            id,
            kind,
            to,
            len: payload.len(),
            at,
        };
        log.push(entry, payload);
        log.trim(&self.window, self.fresh_from(at));
        id
    }

    pub fn snapshot(&self, sid: Uuid, uid: Uuid, since: Option<u64>) -> Snapshot {
        let last_frame_seq = self.frame_seqs.get(&(sid, uid)).map(|e| e.0);
        let fresh_from_ms = self.fresh_from(now_ms());
        let (head, replay) = match self.sessions.get(&sid) {
            None => (
                0,
                since.map(|s| decide(0, s, None, Vec::new(), fresh_from_ms, uid)),
            ),
            Some(log) => {
                let replay = since.map(|since| {
                    let oldest_fresh = log
                        .entries
                        .iter()
                        .find(|e| e.at >= fresh_from_ms)
                        .map(|e| e.id);
                    let after = log.after(since);
                    decide(log.head, since, oldest_fresh, after, fresh_from_ms, uid)
                });
                (log.head, replay)
            }
        };
        Snapshot {
            head: Some(head),
            last_frame_seq,
            replay,
        }
    }

    pub fn note_frame_seq(&self, sid: Uuid, uid: Uuid, seq: i64) {
        let now = Instant::now();
        self.maybe_sweep(now);
        let mut entry = self.frame_seqs.entry((sid, uid)).or_insert((seq, now));
        entry.0 = entry.0.max(seq);
        entry.1 = now;
    }

    fn fresh_from(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.window.max_age.as_millis() as u64)
    }

    /// Once per `max_age` (at least a second): trims every session and forgets the
    /// counters and frame seqs idle for `KEEP_COUNTERS`.
    fn maybe_sweep(&self, now: Instant) {
        let every = self.window.max_age.max(Duration::from_secs(1)).as_millis() as u64;
        let elapsed = now.saturating_duration_since(self.started).as_millis() as u64;
        let last = self.swept_at.load(Ordering::Relaxed);
        if elapsed.saturating_sub(last) < every
            || self
                .swept_at
                .compare_exchange(last, elapsed, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let fresh_from_ms = self.fresh_from(now_ms());
        self.sessions.retain(|_, log| {
            log.trim(&self.window, fresh_from_ms);
            !log.entries.is_empty()
                || log
                    .touched
                    .is_some_and(|t| now.saturating_duration_since(t) < KEEP_COUNTERS)
        });
        self.frame_seqs
            .retain(|_, (_, t)| now.saturating_duration_since(*t) < KEEP_COUNTERS);
    }

    /// Sessions held (for tests of the sweep).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}
