//! The Inside message bus: one small enum over NATS (distributed) and an
//! in-process router (embedded default) with the same subjects and the same
//! semantics: plain subscriptions see every message, queue subscriptions in
//! one group share them, and a full subscription buffer drops (and counts) a
//! message instead of growing memory.

pub mod events;
pub mod jobs;
mod local;
mod nats;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
pub use inside_schemas::subjects::Subjects;

pub use crate::events::StateEvent;
pub use crate::local::LocalBus;

/// The queue group of the worker fleet.
pub const WORKERS: &str = "workers";

/// Messages a subscription buffers before the bus drops (and counts) more.
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("publishing to NATS: {0}")]
    Publish(#[from] async_nats::PublishError),
    #[error("subscribing on NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("flushing NATS: {0}")]
    Flush(#[from] async_nats::client::FlushError),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("encoding a payload: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One message as a subscriber sees it.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
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

    /// Connects to NATS with sized subscription buffers and slow-consumer
    /// events counted in `inside_bus_slow_consumer_total`.
    pub async fn connect_nats(url: &str, name: &str, subjects: Subjects) -> Result<Self, BusError> {
        let client = nats::connect(url, name).await?;
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
                bus.publish(&subject, payload);
                Ok(())
            }
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
            Bus::Nats { client, .. } => Ok(Subscription::Nats(client.subscribe(subject).await?)),
            Bus::Local { bus, .. } => Ok(Subscription::Local(bus.subscribe(&subject, None))),
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
            )),
            Bus::Local { bus, .. } => Ok(Subscription::Local(
                bus.subscribe(&subject, Some(group.to_string())),
            )),
        }
    }

    /// Waits until what was published has reached the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        match self {
            Bus::Nats { client, .. } => Ok(client.flush().await?),
            Bus::Local { .. } => Ok(()),
        }
    }
}

/// A live subscription; dropping it unsubscribes.
pub enum Subscription {
    Nats(async_nats::Subscriber),
    Local(local::LocalSubscription),
}

impl Subscription {
    /// Stops new deliveries; what is already buffered is still yielded, then
    /// the stream ends. Used by a graceful stop so nothing held is lost.
    pub async fn drain(&mut self) {
        match self {
            Subscription::Nats(s) => {
                if let Err(e) = s.drain().await {
                    tracing::warn!(error = %e, "draining a NATS subscription failed");
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
            Subscription::Nats(s) => Pin::new(s).poll_next(cx).map(|m| {
                m.map(|m| BusMessage {
                    subject: m.subject.to_string(),
                    payload: m.payload,
                })
            }),
            Subscription::Local(s) => s.poll_recv(cx),
        }
    }
}

/// `(sid, uid)` from the last two tokens of a per-user subject such as
/// `inside.v1.frames.<sid>.<uid>`.
pub fn sid_uid(subject: &str) -> Option<(uuid::Uuid, uuid::Uuid)> {
    let mut it = subject.rsplitn(3, '.');
    let uid = it.next()?.parse().ok()?;
    let sid = it.next()?.parse().ok()?;
    Some((sid, uid))
}

/// The last token of a subject such as `inside.v1.state.<sid>`.
pub fn last_uuid(subject: &str) -> Option<uuid::Uuid> {
    subject.rsplit('.').next()?.parse().ok()
}
