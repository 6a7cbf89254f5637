//! `EventLog`: a short history of each session's server → client events (nudges, speaker
//! events, pokes), so a phone that drops and reconnects with `?since=<event_id>` gets what it
//! missed. Each event gets a per-session increasing id when its producer appends it; the
//! history keeps the last `Window::events` of them for `Window::max_age`, each with its
//! recipient (one user, or everyone in the session). It also keeps, per (session, user), the
//! highest feature-frame `seq` a gateway accepted.
//!
//! Where it lives depends on the deployment: in memory in the embedded default (one process
//! produces and delivers), on the bus with NATS (a JetStream stream numbers and keeps the events,
//! `inside_bus::history`; only the frame seqs are kept here, in Redis when there is one), and
//! nowhere when the resume window is 0.

mod memory;
mod remote;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use inside_schemas::HistoryKind;
use uuid::Uuid;

pub use memory::MemoryLog;
pub use remote::RedisFrameSeqs;
pub(crate) use remote::Script;

use crate::limiter::Limiter;
use crate::Result;

/// How long a session's id counter and frame seqs outlive its last event: ids must keep
/// increasing across a quiet hour, and a reconnecting phone learns its last accepted frame.
const KEEP_COUNTERS: Duration = Duration::from_secs(24 * 3600);

/// How much history each session keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The last this many events (at least).
    pub events: usize,
    /// Events older than this are gone.
    pub max_age: Duration,
}

/// One event as the history holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub id: u64,
    pub kind: HistoryKind,
    /// `None`: everyone in the session (speaker events).
    pub to: Option<Uuid>,
    /// The JSON payload as its producer published it.
    pub payload: Bytes,
}

/// What a socket resuming after `since` gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Every event after `since` meant for the user, oldest first (maybe none).
    Complete(Vec<LoggedEvent>),
    /// Some events after `since` are no longer held: the client must refetch its state.
    Gone { oldest: Option<u64> },
}

/// What a joining socket reads from the history in one go.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// The session's newest event id (`None`: no history is kept here).
    pub head: Option<u64>,
    /// The highest frame seq accepted for the user in the session.
    pub last_frame_seq: Option<i64>,
    /// Asked for with `since`.
    pub replay: Option<Replay>,
}

/// Outcome of an append behind a one-per-window limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Once {
    /// Another one went out in this window; nothing was appended.
    Limited,
    /// Allowed, with its id (`None`: no history is kept here).
    Sent(Option<u64>),
}

/// One event of [`EventLog::append_many`].
#[derive(Debug, Clone)]
pub struct Pending {
    pub sid: Uuid,
    /// `None`: everyone in the session.
    pub to: Option<Uuid>,
    pub kind: HistoryKind,
    pub payload: Bytes,
    /// The one-per-window limit it must pass (its key in the limiter, its window), if any.
    pub once: Option<(String, Duration)>,
}

#[derive(Clone)]
pub enum EventLog {
    Off,
    Memory(Arc<MemoryLog>),
    /// On NATS: the bus keeps the events and numbers them (a JetStream stream the gateways
    /// read back, `inside_bus::history`), so producers append nothing; only the frame seqs are
    /// kept here, in Redis when there is one.
    OnBus(Option<Arc<RedisFrameSeqs>>),
}

impl EventLog {
    /// The history a process keeps, next to `limiter`: memory when the process is the whole
    /// deployment (`in_process`, the embedded default); otherwise the bus's, with the frame
    /// seqs on the limiter's Redis connection when it is Redis. `window` `None` turns history
    /// off.
    pub fn for_deployment(limiter: &Limiter, in_process: bool, window: Option<Window>) -> Self {
        match (window, limiter) {
            (None, _) => EventLog::Off,
            (Some(w), _) if in_process => EventLog::memory(w),
            (Some(_), Limiter::Redis { conn, prefix, .. }) => EventLog::OnBus(Some(Arc::new(
                RedisFrameSeqs::new(conn.clone(), prefix.clone()),
            ))),
            (Some(_), Limiter::Memory(_)) => EventLog::OnBus(None),
        }
    }

    pub fn memory(window: Window) -> Self {
        EventLog::Memory(Arc::new(MemoryLog::new(window)))
    }

    /// True when events get ids here (not when the bus numbers them).
    pub fn is_on(&self) -> bool {
        matches!(self, EventLog::Memory(_))
    }

    /// True when a noted frame seq is written later, by the writing task (Redis).
    pub fn writes_frame_seqs_later(&self) -> bool {
        matches!(self, EventLog::OnBus(Some(_)))
    }

    /// True when the bus keeps and numbers the events.
    pub fn is_on_bus(&self) -> bool {
        matches!(self, EventLog::OnBus(_))
    }

    /// Appends an event for `to` (`None`: everyone) and returns its id.
    pub async fn append(
        &self,
        sid: Uuid,
        to: Option<Uuid>,
        kind: HistoryKind,
        payload: &[u8],
    ) -> Result<Option<u64>> {
        match self {
            EventLog::Off | EventLog::OnBus(_) => Ok(None),
            EventLog::Memory(log) => Ok(Some(log.append(sid, to, kind, payload))),
        }
    }

    /// Appends unless `limiter` already let `key` through in this `window`.
    #[allow(clippy::too_many_arguments)]
    pub async fn append_once(
        &self,
        limiter: &Limiter,
        key: &str,
        window: Duration,
        sid: Uuid,
        to: Option<Uuid>,
        kind: HistoryKind,
        payload: Bytes,
    ) -> Result<Once> {
        let event = Pending {
            sid,
            to,
            kind,
            payload,
            once: Some((key.to_string(), window)),
        };
        let outcome = self.append_many(limiter, &[event]).await?.pop();
        Ok(outcome.unwrap_or(Once::Limited))
    }

    /// Appends each of `events` (behind its one-per-window limit, if it has one), outcomes in
    /// their order; a limit this process already knows is taken is answered without asking.
    /// An error fails the rest of the batch.
    pub async fn append_many(&self, limiter: &Limiter, events: &[Pending]) -> Result<Vec<Once>> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let allowed = match &e.once {
                Some((key, _)) if limiter.taken_here(key) => false,
                Some((key, window)) => limiter.once_per(key, *window).await?,
                None => true,
            };
            out.push(if allowed {
                Once::Sent(self.append(e.sid, e.to, e.kind, &e.payload).await?)
            } else {
                Once::Limited
            });
        }
        Ok(out)
    }

    /// The session's newest id, `uid`'s last accepted frame seq and, with `since`, what
    /// `uid` missed after it (on the bus only the frame seq: the gateway reads the rest from
    /// the stream).
    pub async fn snapshot(&self, sid: Uuid, uid: Uuid, since: Option<u64>) -> Result<Snapshot> {
        match self {
            EventLog::Off => Ok(Snapshot {
                replay: since.map(|_| Replay::Gone { oldest: None }),
                ..Snapshot::default()
            }),
            EventLog::Memory(log) => Ok(log.snapshot(sid, uid, since)),
            // the head and the replay come from the bus
            EventLog::OnBus(None) => Ok(Snapshot::default()),
            EventLog::OnBus(Some(log)) => Ok(Snapshot {
                last_frame_seq: log.last_frame_seq(sid, uid).await?,
                ..Snapshot::default()
            }),
        }
    }

    /// Raises `uid`'s highest accepted frame seq in `sid` to `seq`, without waiting: in Redis
    /// it is written with the others noted within `remote::FLUSH_EVERY`, in one round trip.
    pub fn note_frame_seq_soon(&self, sid: Uuid, uid: Uuid, seq: i64) {
        match self {
            EventLog::Off | EventLog::OnBus(None) => {}
            EventLog::Memory(log) => log.note_frame_seq(sid, uid, seq),
            EventLog::OnBus(Some(log)) => log.note_frame_seq_soon(sid, uid, seq),
        }
    }

    /// Writes the frame seqs noted and not yet written (a graceful stop).
    pub async fn write_frame_seqs_now(&self) {
        if let EventLog::OnBus(Some(log)) = self {
            log.write_now().await;
        }
    }
}

/// An event and when it was appended (ms since the Unix epoch).
pub(crate) type Held = (LoggedEvent, u64);

/// What `uid` resuming after `since` gets, from the session's newest id, the oldest fresh id
/// held, and the entries after `since` (oldest first). The ids of a session are contiguous
/// from the oldest held to the newest, so the history is complete after `since` exactly when
/// the first entry after it is `since + 1` and still fresh.
pub(crate) fn decide(
    head: u64,
    since: u64,
    oldest_fresh: Option<u64>,
    after: Vec<Held>,
    fresh_from_ms: u64,
    uid: Uuid,
) -> Replay {
    if since == head {
        return Replay::Complete(Vec::new());
    }
    let complete = since < head
        && after
            .first()
            .is_some_and(|(e, at)| e.id == since + 1 && *at >= fresh_from_ms);
    if !complete {
        return Replay::Gone {
            oldest: oldest_fresh,
        };
    }
    Replay::Complete(
        after
            .into_iter()
            .map(|(e, _)| e)
            .filter(|e| e.to.is_none_or(|to| to == uid))
            .collect(),
    )
}

/// Milliseconds since the Unix epoch (entries' append times; compared across processes).
pub(crate) fn now_ms() -> u64 {
    u64::try_from(crate::now_micros() / 1000).unwrap_or(0)
}

#[cfg(test)]
mod tests;
