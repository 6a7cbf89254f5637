//! The resume history on NATS: a JetStream stream on disk (`<PREFIX>_EVENTS`) captures every
//! nudge, speaker event and poke as it is published, and its sequence numbers are the events'
//! ids. One counter for the deployment, kept by the server that routes the events anyway: ids
//! increase within every session in the order gateways receive them, and no producer waits on
//! a round trip for one (the Redis counter every nudge used to wait for cost a third to a half
//! of its latency, `docs/benchmarks/2026-12-07-event-stream.md`).
//!
//! Each gateway follows the stream with an ordered consumer (its live feed: every event with
//! its id, in order) and reads a resuming socket's missed events back by subject and sequence
//! (direct gets), so no consumer lives per socket.
//!
//! On disk, so a NATS server that restarts keeps the stream and its ids: the ordered consumer
//! picks up after the last id it delivered, and a phone's `since` still means what it did. A
//! stream that is made anew all the same (deleted, or a server that lost its store) would start
//! its ids again, and a phone's `since` could then name another event: [`EventStream::made_at`]
//! tells a follower, which moves the new stream's ids past the old ones
//! ([`EventStream::continue_after`]) and starts over.

mod turns;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::{BusError, BusMessage, Headers, Subjects};

pub use turns::{LastEvent, Stored, Storing};

/// How far past the newest id a follower knew a stream made anew starts: followers are a few
/// events apart at most, so whichever moves the ids first moves them past every follower's.
pub const RESTART_GAP: u64 = 1_000_000;

/// How much the stream keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// The last this many events of each subject (a user's nudges in a session, a session's
    /// speaker events, a user's pokes).
    pub per_subject: u64,
    /// Events older than this are gone.
    pub max_age: Duration,
    /// In nats-server's memory rather than on disk: lost when NATS restarts.
    pub in_memory: bool,
}

/// One event read from the stream: its id (the stream sequence) and the message as published.
#[derive(Debug, Clone)]
pub struct Logged {
    pub id: u64,
    pub msg: BusMessage,
}

/// What a resuming socket missed.
#[derive(Debug)]
pub enum Missed {
    /// Every event after `since` on its subjects, oldest first (maybe none).
    Events(Vec<Logged>),
    /// Some of them are no longer held; `oldest` is the oldest id the stream still holds.
    Gone { oldest: Option<u64> },
}

/// The events stream of a deployment; cheap to clone.
#[derive(Clone)]
pub struct EventStream {
    client: async_nats::Client,
    /// Made once: a publish in turn goes through it per nudge.
    js: jetstream::Context,
    stream: stream::Stream,
    config: stream::Config,
}

/// A live feed of the stream from some point on.
pub struct Following {
    /// The newest id when the feed started; the feed brings every later one, in order.
    pub head: u64,
    /// The oldest id the stream held then (`None`: none).
    pub oldest: Option<u64>,
    /// When the stream followed was made ([`EventStream::made_at`]).
    pub made: i128,
    pub events: BoxStream<'static, Logged>,
}

fn js_error(e: impl std::fmt::Display) -> BusError {
    BusError::JetStream(e.to_string())
}

impl EventStream {
    /// Creates the stream, or brings an existing one to `keep` (a deployment that changed its
    /// resume window).
    pub async fn ensure(
        client: &async_nats::Client,
        subjects: &Subjects,
        keep: Retention,
    ) -> Result<Self, BusError> {
        let config = Self::config(subjects, keep);
        let js = jetstream::new(client.clone());
        let updated = js.create_or_update_stream(config.clone()).await;
        let stream = js.get_stream(&config.name).await.map_err(js_error)?;
        if let Err(e) = updated {
            // the one change an update cannot make is where the stream is kept (the setting
            // changed, or the stream predates it): the one there serves, and the change takes
            // effect when it is made anew (a memory stream at NATS's next restart)
            let held = stream.cached_info().config.storage;
            if held == config.storage {
                return Err(js_error(e));
            }
            tracing::warn!(stream = %config.name, ?held, wanted = ?config.storage, "the events stream is kept elsewhere than WEBSOCKET_RESUME_IN_MEMORY says; following it as it is (delete it to have it made anew: every socket then gets server.resync)");
        }
        Ok(Self {
            client: client.clone(),
            js,
            stream,
            config,
        })
    }

    /// The stream as `keep` wants it.
    fn config(subjects: &Subjects, keep: Retention) -> stream::Config {
        stream::Config {
            name: subjects.events_stream(),
            subjects: vec![
                subjects.all_nudges(),
                subjects.all_speakers(),
                subjects.all_pokes(),
            ],
            storage: if keep.in_memory {
                stream::StorageType::Memory
            } else {
                stream::StorageType::File
            },
            max_age: keep.max_age,
            max_messages_per_subject: i64::try_from(keep.per_subject).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::Old,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// The stream as it is, made as `keep` wants it when there is none yet (a worker that
    /// starts before any gateway; the gateways bring it to their settings).
    pub async fn open(
        client: &async_nats::Client,
        subjects: &Subjects,
        keep: Retention,
    ) -> Result<Self, BusError> {
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(Self::config(subjects, keep))
            .await
            .map_err(js_error)?;
        let config = stream.cached_info().config.clone();
        Ok(Self {
            client: client.clone(),
            js,
            stream,
            config,
        })
    }

    /// When the stream now on the server was made (ns since the epoch), making it again
    /// if it is gone. A value other than a feed's [`Following::made`] means the stream was
    /// made anew since: its ids started again, and the feed waits for ids that will mean
    /// other events (until [`EventStream::continue_after`] moves them).
    pub async fn made_at(&self) -> Result<i128, BusError> {
        let stream = self
            .js
            .get_or_create_stream(self.config.clone())
            .await
            .map_err(js_error)?;
        Ok(stream.cached_info().created.unix_timestamp_nanos())
    }

    /// Moves the ids of a stream made anew past `known` (the newest id the caller had handed
    /// out) and [`RESTART_GAP`], unless they are past `known` already (another follower moved
    /// them): ids never go back, so a `since` from the old stream reads as gone, never as an
    /// event of the new one. What the new stream took before is dropped; it went out while the
    /// followers switched over, and their sockets get `server.resync`.
    pub async fn continue_after(&self, known: u64) -> Result<(), BusError> {
        let last = self
            .stream
            .get_info()
            .await
            .map_err(js_error)?
            .state
            .last_sequence;
        if last > known {
            return Ok(());
        }
        // a purge up to a sequence past the last makes it the next one
        self.stream
            .purge()
            .sequence(known.saturating_add(RESTART_GAP + 1))
            .await
            .map_err(js_error)?;
        Ok(())
    }

    /// Every event after the newest one when called, as it arrives, in order.
    pub async fn follow(&self) -> Result<Following, BusError> {
        let info = self.stream.get_info().await.map_err(js_error)?;
        let head = info.state.last_sequence;
        let consumer = self
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: head + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(js_error)?;
        let messages = consumer.messages().await.map_err(js_error)?;
        let feed = messages.filter_map(|m| async move {
            match m {
                Ok(m) => {
                    let id = m.info().ok()?.stream_sequence;
                    let m = m.message;
                    Some(Logged {
                        id,
                        msg: BusMessage {
                            subject: m.subject.to_string(),
                            payload: m.payload,
                            headers: m.headers.as_ref().map(Headers::from_nats),
                            reply: None,
                        },
                    })
                }
                Err(e) => {
                    // the ordered consumer makes itself again from the last id it delivered
                    tracing::warn!(error = %e, "following the event stream");
                    None
                }
            }
        });
        Ok(Following {
            head,
            oldest: (info.state.messages > 0).then_some(info.state.first_sequence),
            made: info.created.unix_timestamp_nanos(),
            events: feed.boxed(),
        })
    }

    /// The events on `subjects` with an id after `since` and up to `through` (the live feed
    /// brings the later ones), oldest first; `Gone` when some of them may have been dropped
    /// (too old, or pushed out of their subject's last [`Retention::per_subject`]), or when
    /// `since` is an id the stream never reached.
    pub async fn missed(
        &self,
        subjects: &[String],
        since: u64,
        through: u64,
    ) -> Result<Missed, BusError> {
        if since == through {
            return Ok(Missed::Events(Vec::new()));
        }
        let state = self.stream.get_info().await.map_err(js_error)?.state;
        let first = state.first_sequence;
        if since > through {
            // beyond what the caller's feed has handled: fine while the stream has it (the
            // feed is behind another gateway's, and brings those live), not beyond (a stream
            // made anew, or a bogus since)
            return Ok(if since <= state.last_sequence {
                Missed::Events(Vec::new())
            } else {
                Missed::Gone {
                    oldest: Some(first),
                }
            });
        }
        // ages out from the front: anything after `since` and before the oldest held is gone
        if since + 1 < first {
            return Ok(Missed::Gone {
                oldest: Some(first),
            });
        }
        let mut out = Vec::new();
        for subject in subjects {
            let mut held = 0u64;
            let mut next = since + 1;
            loop {
                let m = match self
                    .stream
                    .direct_get_next_for_subject(subject, Some(next))
                    .await
                {
                    Ok(m) => m.message,
                    Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                    Err(e) => return Err(js_error(e)),
                };
                let headers = m.headers.as_ref();
                let id = headers
                    .and_then(|h| h.get(async_nats::header::NATS_SEQUENCE))
                    .and_then(|v| v.as_str().parse::<u64>().ok())
                    .ok_or_else(|| js_error("a direct get without its sequence"))?;
                if id > through {
                    break;
                }
                held += 1;
                // a subject at its limit may have pushed out events after `since`
                if held >= self.config.max_messages_per_subject.unsigned_abs() {
                    return Ok(Missed::Gone {
                        oldest: Some(first),
                    });
                }
                let subject = headers
                    .and_then(|h| h.get(async_nats::header::NATS_SUBJECT))
                    .map_or_else(|| subject.clone(), |v| v.as_str().to_string());
                out.push(Logged {
                    id,
                    msg: BusMessage {
                        subject,
                        payload: m.payload,
                        headers: None,
                        reply: None,
                    },
                });
                next = id + 1;
            }
        }
        out.sort_by_key(|l| l.id);
        Ok(Missed::Events(out))
    }
}
