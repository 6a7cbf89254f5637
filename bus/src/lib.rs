//! The Inside message bus: one small enum over NATS (distributed) and an
//! in-process router (embedded default) with the same subjects and the same
//! semantics: plain subscriptions see every message, queue subscriptions in
//! one group share them, and a full subscription buffer drops (and counts) a
//! message instead of growing memory.

mod drops;
pub mod events;
mod headers;
pub mod history;
pub mod inbound;
pub mod jobs;
mod local;
pub mod mailbox;
mod nats;
pub mod uploads;

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
pub use inside_schemas::subjects::Subjects;
pub use inside_settings::{NatsAuth, NatsOptions, NatsTls};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::drops::count_dropped;
pub use crate::events::StateEvent;
pub use crate::headers::{HeaderValue, Headers};
pub use crate::local::LocalBus;
/// Formats a number as a [`HeaderValue`] without a heap allocation.
pub use compact_str::ToCompactString;

/// The queue group of the worker fleet.
pub const WORKERS: &str = "workers";

/// Messages a subscription buffers before the bus drops (and counts) more.
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// How long an in-process publish waits for a full queue group (the worker pool) before it
/// drops the message: long enough for any burst the pool will work off, short enough that a
/// stuck consumer shows up in the logs instead of hanging every socket.
const LOCAL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("NATS credentials: {0}")]
    Credentials(String),
    #[error("publishing to NATS: {0}")]
    Publish(#[from] async_nats::PublishError),
    #[error("subscribing on NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("flushing NATS: {0}")]
    Flush(#[from] async_nats::client::FlushError),
    #[error("NATS did not echo a sync message within {0:?}")]
    Sync(std::time::Duration),
    /// Nobody subscribes to the subject: NATS says so at once.
    #[error("no responders on the subject")]
    NoResponders,
    /// Somebody may listen, but no answer came within the timeout.
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("request on NATS: {0}")]
    Request(async_nats::RequestError),
    #[error("request/reply needs NATS; the in-process bus answers in-process")]
    NoRequestReply,
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("encoding a payload: {0}")]
    Encode(#[from] serde_json::Error),
}

/// How long [`Bus::flush`] waits for the server's echo.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One message as a subscriber sees it.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
    /// Metadata: an audio segment's bounds, a frame's receive time, an event's id.
    pub headers: Option<Headers>,
    /// Where a request wants its answer (request/reply on NATS).
    pub reply: Option<String>,
}

impl BusMessage {
    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name)
    }
}

/// Header pairs to the bus's headers (the values moved in, not copied).
pub fn header_map<V: Into<HeaderValue>>(
    pairs: impl IntoIterator<Item = (&'static str, V)>,
) -> Headers {
    let mut headers = Headers::new();
    for (name, value) in pairs {
        headers.insert(name, value);
    }
    headers
}

/// The id of a realtime event in its session's history (`server.nudge`, `server.speaker`), set
/// by the producer that appended it so every gateway delivers the same id.
pub const EVENT_ID_HEADER: &str = "Inside-Event-Id";
/// On a frame, when the gateway accepted it (µs since the Unix epoch, [`server_now_us`]); a
/// worker copies it onto the nudge the frame causes, for `inside_frame_to_nudge_seconds`.
///
/// [`server_now_us`]: inside_schemas::server_now_us
pub const FRAME_RECEIVED_US_HEADER: &str = "Inside-Frame-Received-Us";
/// A poke's ids: `<sid>:<id>` for each session whose history it was appended to,
/// comma-separated (a poke goes to a user, each of their sessions has its own ids).
pub const SESSION_EVENT_IDS_HEADER: &str = "Inside-Session-Event-Ids";

/// `# HELP` of the bus's own series; call once the recorder is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "inside_bus_rejected_total",
        "Bus messages refused (forged, malformed, for an unknown session), by subject kind and reason"
    );
    metrics::describe_counter!(
        "inside_bus_slow_consumer_total",
        "Messages dropped because a subscription's buffer was full, by bus"
    );
    metrics::describe_counter!(
        "inside_bus_server_errors_total",
        "Operations the NATS server refused (permission violations)"
    );
    metrics::describe_gauge!(
        nats::NATS_CONNECTED,
        "1 while this process's NATS connection is up, 0 while it is down"
    );
}

/// A handle to the bus; cheap to clone.
#[derive(Clone, Debug)]
pub enum Bus {
    Nats {
        client: async_nats::Client,
        subjects: Subjects,
    },
    Local {
        bus: LocalBus,
        subjects: Subjects,
    },
}

impl Bus {
    /// The in-process bus of the embedded default.
    pub fn local(subjects: Subjects) -> Self {
        Bus::Local {
            bus: LocalBus::new(),
            subjects,
        }
    }

    /// Connects to NATS without credentials (a development server, tests); see
    /// [`Bus::connect_nats_with`].
    pub async fn connect_nats(url: &str, name: &str, subjects: Subjects) -> Result<Self, BusError> {
        Self::connect_nats_with(url, name, &NatsOptions::default(), subjects).await
    }

    /// Connects to NATS as the identity of `options` (credentials, TLS), with sized
    /// subscription buffers and slow-consumer events counted in
    /// `inside_bus_slow_consumer_total`.
    pub async fn connect_nats_with(
        url: &str,
        name: &str,
        options: &NatsOptions,
        subjects: Subjects,
    ) -> Result<Self, BusError> {
        let client = nats::connect(url, name, options).await?;
        Ok(Bus::Nats { client, subjects })
    }

    pub fn subjects(&self) -> &Subjects {
        match self {
            Bus::Nats { subjects, .. } | Bus::Local { subjects, .. } => subjects,
        }
    }

    /// The NATS client, when distributed (health checks, JetStream).
    pub fn nats(&self) -> Option<&async_nats::Client> {
        match self {
            Bus::Nats { client, .. } => Some(client),
            Bus::Local { .. } => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Bus::Local { .. })
    }

    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        match self {
            Bus::Nats { client, .. } => Ok(client.publish(subject, payload).await?),
            Bus::Local { bus, .. } => {
                bus.publish_waiting(subject, None, payload, LOCAL_PATIENCE)
                    .await;
                Ok(())
            }
        }
    }

    /// Publishes a binary payload with its metadata in headers.
    pub async fn publish_with_headers(
        &self,
        subject: String,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        match self {
            Bus::Nats { client, .. } => Ok(client
                .publish_with_headers(subject, headers.to_nats(), payload)
                .await?),
            Bus::Local { bus, .. } => {
                bus.publish_waiting(subject, Some(headers), payload, LOCAL_PATIENCE)
                    .await;
                Ok(())
            }
        }
    }

    /// A NATS request with headers, answered by one member of a queue group
    /// (voiceprint enrolment on `inside.v1.embed`). A payload over the server's
    /// `max_payload` travels through [`uploads`]; responders read it with
    /// [`Bus::request_body`]. The in-process bus has no request/reply: the
    /// embedded default calls the engine directly.
    pub async fn request(
        &self,
        subject: String,
        mut headers: Headers,
        mut payload: Bytes,
        timeout: std::time::Duration,
    ) -> Result<Bytes, BusError> {
        match self {
            Bus::Nats { client, subjects } => {
                if uploads::needs_upload(client, payload.len()) {
                    let name = uploads::put(client, subjects, &payload).await?;
                    headers.insert(uploads::UPLOAD_HEADER, name);
                    payload = Bytes::new();
                }
                let request = async_nats::Request::new()
                    .headers(headers.to_nats())
                    .payload(payload)
                    .timeout(Some(timeout));
                match client.send_request(subject, request).await {
                    Ok(reply) => Ok(reply.payload),
                    Err(e) => Err(match e.kind() {
                        async_nats::RequestErrorKind::NoResponders => BusError::NoResponders,
                        async_nats::RequestErrorKind::TimedOut => BusError::TimedOut(timeout),
                        _ => BusError::Request(e),
                    }),
                }
            }
            Bus::Local { .. } => Err(BusError::NoRequestReply),
        }
    }

    /// The body of a request: its payload, or the upload its `Inside-Upload` header names.
    pub async fn request_body(&self, msg: &BusMessage) -> Result<Bytes, BusError> {
        match (self, msg.header(uploads::UPLOAD_HEADER)) {
            (Bus::Nats { client, subjects }, Some(name)) => {
                uploads::take(client, subjects, name).await
            }
            _ => Ok(msg.payload.clone()),
        }
    }

    /// Publishes a history event's payload, with its id in `Inside-Event-Id` when it has one.
    pub async fn publish_event(
        &self,
        subject: String,
        event_id: Option<u64>,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.publish_nudge(subject, event_id, None, payload).await
    }

    /// [`Bus::publish_event`], with the time its frame was accepted when a frame caused it
    /// ([`FRAME_RECEIVED_US_HEADER`]).
    pub async fn publish_nudge(
        &self,
        subject: String,
        event_id: Option<u64>,
        frame_received_us: Option<i64>,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let headers = nudge_headers(event_id, frame_received_us);
        if headers.is_empty() {
            self.publish(subject, payload).await
        } else {
            self.publish_with_headers(subject, headers, payload).await
        }
    }

    /// Publishes `value` as JSON.
    pub async fn publish_json<T: serde::Serialize>(
        &self,
        subject: String,
        value: &T,
    ) -> Result<(), BusError> {
        let payload = serde_json::to_vec(value)?;
        self.publish(subject, payload.into()).await
    }

    /// Every message on `subject` (wildcards `*` and `>` allowed).
    pub async fn subscribe(&self, subject: String) -> Result<Subscription, BusError> {
        match self {
            Bus::Nats { client, .. } => Ok(Subscription::Nats(
                client.subscribe(subject).await?,
                client.clone(),
            )),
            Bus::Local { bus, .. } => Ok(Subscription::Local(bus.subscribe(&subject, None))),
        }
    }

    /// As [`subscribe`](Self::subscribe), for a subscriber that must not lose a message to a
    /// full buffer in one process: the in-process publishers wait for its room instead (NATS
    /// has no such thing; there it is a plain subscription).
    pub async fn subscribe_paced(&self, subject: String) -> Result<Subscription, BusError> {
        match self {
            Bus::Nats { .. } => self.subscribe(subject).await,
            Bus::Local { bus, .. } => Ok(Subscription::Local(
                bus.subscribe_with(&subject, None, true),
            )),
        }
    }

    /// Each message on `subject` goes to one member of `group`.
    pub async fn queue_subscribe(
        &self,
        subject: String,
        group: &str,
    ) -> Result<Subscription, BusError> {
        match self {
            Bus::Nats { client, .. } => Ok(Subscription::Nats(
                client.queue_subscribe(subject, group.to_string()).await?,
                client.clone(),
            )),
            Bus::Local { bus, .. } => Ok(Subscription::Local(
                bus.subscribe(&subject, Some(group.to_string())),
            )),
        }
    }

    /// Waits until the server has processed everything sent before, subscriptions
    /// included, so a message another connection publishes next finds them.
    pub async fn flush(&self) -> Result<(), BusError> {
        match self {
            Bus::Nats { client, .. } => sync(client).await,
            Bus::Local { .. } => Ok(()),
        }
    }
}

/// Waits for the server to have processed everything `client` sent before.
///
/// async-nats' own flush only writes the socket, it does not wait for the server. One
/// connection's commands are processed in order, so a message to ourselves coming back proves
/// everything before it was processed. It also wakes the connection's task, which is what
/// finishes a drained subscription (otherwise that waits for the next ping, up to a minute).
async fn sync(client: &async_nats::Client) -> Result<(), BusError> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, Bytes::new()).await?;
    client.flush().await?;
    match tokio::time::timeout(SYNC_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        _ => Err(BusError::Sync(SYNC_TIMEOUT)),
    }
}

/// A live subscription; dropping it unsubscribes.
pub enum Subscription {
    Nats(async_nats::Subscriber, async_nats::Client),
    Local(local::LocalSubscription),
}

impl Subscription {
    /// Hands each message to `handle` until `shutdown`, then drains: what the subscription
    /// already holds is still handled, so a graceful stop loses nothing. `handle` answering
    /// `Break` ends it at once.
    pub async fn serve<F, Fut>(mut self, shutdown: &CancellationToken, mut handle: F)
    where
        F: FnMut(BusMessage) -> Fut,
        Fut: Future<Output = ControlFlow<()>>,
    {
        loop {
            let msg = tokio::select! {
                m = self.next() => m,
                _ = shutdown.cancelled() => break,
            };
            let Some(msg) = msg else { return };
            if handle(msg).await.is_break() {
                return;
            }
        }
        self.drain().await;
        while let Some(msg) = self.next().await {
            if handle(msg).await.is_break() {
                return;
            }
        }
    }

    /// Stops new deliveries; what is already buffered is still yielded, then
    /// the stream ends. Used by a graceful stop so nothing held is lost.
    pub async fn drain(&mut self) {
        match self {
            Subscription::Nats(s, client) => {
                if let Err(e) = s.drain().await {
                    tracing::warn!(error = %e, "draining a NATS subscription failed");
                }
                if let Err(e) = sync(client).await {
                    tracing::warn!(error = %e, "waiting for a drain to finish failed");
                }
            }
            Subscription::Local(s) => s.drain(),
        }
    }
}

impl Stream for Subscription {
    type Item = BusMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BusMessage>> {
        match self.get_mut() {
            Subscription::Nats(s, _) => Pin::new(s).poll_next(cx).map(|m| {
                m.map(|m| BusMessage {
                    subject: m.subject.to_string(),
                    payload: m.payload,
                    headers: m.headers.as_ref().map(Headers::from_nats),
                    reply: m.reply.map(|r| r.to_string()),
                })
            }),
            Subscription::Local(s) => s.poll_recv(cx),
        }
    }
}

/// A nudge's headers: its id when it has one here ([`EVENT_ID_HEADER`]), and when the frame
/// that raised it was accepted ([`FRAME_RECEIVED_US_HEADER`]).
pub fn nudge_headers(event_id: Option<u64>, frame_received_us: Option<i64>) -> Headers {
    let mut headers = Headers::new();
    if let Some(id) = event_id {
        headers.insert(EVENT_ID_HEADER, id.to_compact_string());
    }
    if let Some(at) = frame_received_us {
        headers.insert(FRAME_RECEIVED_US_HEADER, at.to_compact_string());
    }
    headers
}

/// `(sid, uid)` from the last two tokens of a per-user subject such as
/// `inside.v1.frames.<sid>.<uid>`.
pub fn sid_uid(subject: &str) -> Option<(uuid::Uuid, uuid::Uuid)> {
    // every frame and nudge asks: the ids as this code writes them (hyphenated, 36 bytes) are
    // read in place, anything else as before
    const ID: usize = 36;
    let b = subject.as_bytes();
    if b.len() > 2 * ID + 1 && b[b.len() - ID - 1] == b'.' && b[b.len() - 2 * ID - 2] == b'.' {
        let uid = uuid::Uuid::try_parse_ascii(&b[b.len() - ID..]);
        let sid = uuid::Uuid::try_parse_ascii(&b[b.len() - 2 * ID - 1..b.len() - ID - 1]);
        if let (Ok(sid), Ok(uid)) = (sid, uid) {
            return Some((sid, uid));
        }
    }
    let mut it = subject.rsplitn(3, '.');
    let uid = it.next()?.parse().ok()?;
    let sid = it.next()?.parse().ok()?;
    Some((sid, uid))
}

/// The last token of a subject such as `inside.v1.state.<sid>`.
pub fn last_uuid(subject: &str) -> Option<uuid::Uuid> {
    subject.rsplit('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_and_uid_are_read_from_any_per_user_subject() {
        let (sid, uid) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert_eq!(
            sid_uid(&format!("p.inside.v1.frames.{sid}.{uid}")),
            Some((sid, uid))
        );
        // not as this code writes them, still ids
        assert_eq!(
            sid_uid(&format!("x.{}.{}", sid.simple(), uid.simple())),
            Some((sid, uid))
        );
        assert_eq!(sid_uid(&format!("x.{sid}.not-an-id")), None);
        assert_eq!(sid_uid(&format!("{uid}")), None);
        assert_eq!(sid_uid(""), None);
    }
}
