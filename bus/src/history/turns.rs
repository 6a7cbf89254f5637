//! The events stream as the judge of one-event-per-window limits (the nudge limit on NATS):
//! a producer publishes an event naming the subject's newest event it knows of
//! (`Nats-Expected-Last-Subject-Sequence`), and the stream stores it only when that is still
//! the newest. Two producers that both think the window is over cannot both store: the second
//! is refused, reads the subject's newest event ([`EventStream::last_of`]) and learns the
//! window is taken. The check rides on the publish that delivers the event, so a producer that
//! knows the newest event (it stored it, or read it) takes its turn with no round trip first.
//!
//! A refused event is not stored, so no gateway shows it (they follow the stream); a plain
//! subscriber of the subject would still see it, which is why this is used only where the
//! gateways follow the stream.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::StreamMessage;
use async_nats::StatusCode;
use bytes::Bytes;

use super::{js_error, EventStream};
use crate::{BusError, Headers};

/// The newest event of a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct LastEvent {
    /// Its id (the stream sequence).
    pub id: u64,
    /// How long ago the stream stored it, by this host's clock against the server's stamp
    /// (zero when the stamp is ahead).
    pub age: Duration,
    pub payload: Bytes,
}

/// What became of an event published after a known newest one.
#[derive(Debug)]
pub enum Stored {
    /// Stored, with this id.
    Id(u64),
    /// Not stored: the subject's newest event is not the one named.
    NotAfter,
    /// Unknown: no answer, or an error (it may have been stored).
    Unknown(BusError),
}

/// An event on its way to the stream; [`Storing::outcome`] waits for the stream's answer.
pub struct Storing(PublishAckFuture);

impl Storing {
    pub async fn outcome(self) -> Stored {
        match self.0.await {
            Ok(ack) => Stored::Id(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Stored::NotAfter,
            Err(e) => Stored::Unknown(js_error(e)),
        }
    }
}

impl EventStream {
    /// How long the stream keeps an event (`None`: no age limit).
    pub fn keeps_for(&self) -> Option<Duration> {
        (!self.config.max_age.is_zero()).then_some(self.config.max_age)
    }

    /// Publishes an event on `subject`, to be stored only if the subject's newest event is
    /// `after` (0: the subject holds none). Returns once it is sent; the stream's answer
    /// comes with [`Storing::outcome`].
    pub async fn publish_after(
        &self,
        subject: String,
        headers: &Headers,
        payload: Bytes,
        after: u64,
    ) -> Result<Storing, BusError> {
        let publish = jetstream::context::Publish::build()
            .headers(headers.to_nats())
            .payload(payload)
            .expected_last_subject_sequence(after);
        self.js
            .send_publish(subject, publish)
            .await
            .map(Storing)
            .map_err(js_error)
    }

    /// The newest event on `subject`, `None` when the stream holds none. Asked with the
    /// subject in the request's body, not in its subject (async-nats'
    /// `direct_get_last_for_subject`), so the permission the gateways' direct gets use,
    /// `$JS.API.DIRECT.GET.<stream>`, covers it.
    pub async fn last_of(&self, subject: &str) -> Result<Option<LastEvent>, BusError> {
        let request = serde_json::to_vec(&serde_json::json!({ "last_by_subj": subject }))?;
        let reply = self
            .client
            .request(
                format!("$JS.API.DIRECT.GET.{}", self.config.name),
                request.into(),
            )
            .await
            .map_err(BusError::Request)?;
        if reply.status == Some(StatusCode::NOT_FOUND) {
            return Ok(None);
        }
        if let Some(status) = reply.status {
            return Err(js_error(format!(
                "reading the newest event of {subject}: {status} {}",
                reply.description.as_deref().unwrap_or("")
            )));
        }
        let m = StreamMessage::try_from(reply).map_err(js_error)?;
        let now_ns = i128::from(inside_schemas::server_now_us()) * 1_000;
        let age_ns = now_ns.saturating_sub(m.time.unix_timestamp_nanos()).max(0);
        Ok(Some(LastEvent {
            id: m.sequence,
            age: Duration::from_nanos(u64::try_from(age_ns).unwrap_or(u64::MAX)),
            payload: m.payload,
        }))
    }
}
