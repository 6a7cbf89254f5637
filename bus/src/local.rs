//! The in-process bus of the embedded default: NATS subject matching (`*`,
//! `>`), fan-out to plain subscribers, one member per queue group, bounded
//! buffers that drop and count like a NATS slow consumer.
//!
//! A subscription's buffer is a [`Mailbox`]: the gateway holds a subscription per session and
//! per user, and a tokio channel each made those the largest part of an idle socket's memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::mailbox::Mailbox;
use crate::{BusMessage, SUBSCRIPTION_CAPACITY};

#[derive(Clone, Debug, Default)]
pub struct LocalBus {
    inner: Arc<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    subs: RwLock<Subs>,
    next_id: AtomicU64,
    /// Round-robin position for queue groups.
    turn: AtomicU64,
}

#[derive(Debug, Default)]
struct Subs {
    /// Subscriptions without wildcards, found by a map lookup: a gateway
    /// holds thousands of these, and publishing must not scan them all.
    exact: HashMap<String, Vec<Sub>>,
    /// The few wildcard subscriptions (the worker pool, taps).
    wild: Vec<(Vec<String>, Sub)>,
}

#[derive(Debug)]
struct Sub {
    id: u64,
    group: Option<String>,
    queue: Arc<Mailbox<BusMessage>>,
    /// Messages dropped on a full buffer, for a log that does not flood.
    dropped: AtomicU64,
}

impl Drop for Sub {
    fn drop(&mut self) {
        // the registry let go (unsubscribed, or the bus is gone): end the subscriber's stream
        self.queue.close();
    }
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn subscribe(&self, subject: &str, group: Option<String>) -> LocalSubscription {
        let queue = Arc::new(Mailbox::new(SUBSCRIPTION_CAPACITY));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Sub {
            id,
            group,
            queue: queue.clone(),
            dropped: AtomicU64::new(0),
        };
        let mut subs = write(&self.inner.subs);
        if subject.split('.').any(|t| t == "*" || t == ">") {
            subs.wild
                .push((subject.split('.').map(str::to_string).collect(), sub));
        } else {
            subs.exact.entry(subject.to_string()).or_default().push(sub);
        }
        LocalSubscription {
            queue,
            id,
            subject: subject.to_string(),
            registry: Arc::downgrade(&self.inner),
        }
    }

    /// Delivers to every matching plain subscriber and to one member of each
    /// matching queue group; never waits.
    pub fn publish(&self, subject: &str, payload: Bytes) {
        self.publish_with_headers(subject, None, payload);
    }

    /// As [`publish`](Self::publish), with metadata headers.
    pub fn publish_with_headers(
        &self,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
    ) {
        let subs = read(&self.inner.subs);
        let mut groups: Vec<(&str, Vec<&Sub>)> = Vec::new();
        let exact = subs.exact.get(subject).into_iter().flatten();
        let tokens: Vec<&str> = if subs.wild.is_empty() {
            Vec::new()
        } else {
            subject.split('.').collect()
        };
        let wild = subs
            .wild
            .iter()
            .filter(|(pattern, _)| matches(pattern, &tokens))
            .map(|(_, s)| s);
        for sub in exact.chain(wild) {
            match &sub.group {
                None => deliver(sub, subject, &headers, payload.clone()),
                Some(g) => match groups.iter_mut().find(|(name, _)| *name == g.as_str()) {
                    Some((_, members)) => members.push(sub),
                    None => groups.push((g.as_str(), vec![sub])),
                },
            }
        }
        for (_, members) in groups {
            let start = self.inner.turn.fetch_add(1, Ordering::Relaxed) as usize;
            // The next member in turn with room takes it; a drop counts only when all are full.
            let mut msg = Some(message(subject, &headers, payload.clone()));
            for i in 0..members.len() {
                if let Some(m) = msg.take() {
                    msg = members[(start + i) % members.len()].queue.push(m).err();
                }
            }
            if msg.is_some() {
                dropped(members[start % members.len()]);
            }
        }
    }
}

fn message(subject: &str, headers: &Option<async_nats::HeaderMap>, payload: Bytes) -> BusMessage {
    BusMessage {
        subject: subject.to_string(),
        payload,
        headers: headers.clone(),
        reply: None,
    }
}

fn deliver(sub: &Sub, subject: &str, headers: &Option<async_nats::HeaderMap>, payload: Bytes) {
    if sub.queue.push(message(subject, headers, payload)).is_err() {
        dropped(sub);
    }
}

/// Counts (and, at powers of two, logs) a message dropped on a full buffer.
fn dropped(sub: &Sub) {
    metrics::counter!("inside_bus_slow_consumer_total", "bus" => "local").increment(1);
    let dropped = sub.dropped.fetch_add(1, Ordering::Relaxed) + 1;
    // Log the 1st, 2nd, 4th, 8th… drop: visible, not one line per message.
    if dropped.is_power_of_two() {
        tracing::warn!(
            subscription = sub.id,
            dropped,
            "in-process slow consumer: messages dropped"
        );
    }
}

/// NATS matching: `*` is one token, a final `>` one or more.
fn matches(pattern: &[String], tokens: &[&str]) -> bool {
    for (i, p) in pattern.iter().enumerate() {
        if p == ">" {
            return tokens.len() > i;
        }
        match tokens.get(i) {
            Some(t) if p == "*" || p == t => {}
            _ => return false,
        }
    }
    pattern.len() == tokens.len()
}

fn read(lock: &RwLock<Subs>) -> std::sync::RwLockReadGuard<'_, Subs> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(lock: &RwLock<Subs>) -> std::sync::RwLockWriteGuard<'_, Subs> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An in-process subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct LocalSubscription {
    queue: Arc<Mailbox<BusMessage>>,
    id: u64,
    subject: String,
    registry: Weak<Registry>,
}

impl LocalSubscription {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<BusMessage>> {
        self.queue.poll_take(cx)
    }

    /// Unregisters; buffered messages are still yielded, then the stream ends.
    pub(crate) fn drain(&mut self) {
        self.queue.close();
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut subs = write(&registry.subs);
        if let Some(list) = subs.exact.get_mut(&self.subject) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                subs.exact.remove(&self.subject);
            }
        }
        subs.wild.retain(|(_, s)| s.id != self.id);
    }
}

impl Drop for LocalSubscription {
    fn drop(&mut self) {
        self.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[tokio::test]
    async fn a_drained_subscription_yields_what_it_holds_then_ends() {
        use futures::StreamExt;
        let bus = LocalBus::new();
        let mut sub = crate::Subscription::Local(bus.subscribe("a.*", None));
        bus.publish("a.1", Bytes::from_static(b"1"));
        bus.publish("a.2", Bytes::from_static(b"2"));
        sub.drain().await;
        bus.publish("a.3", Bytes::from_static(b"3"));
        let got: Vec<String> = sub.map(|m| m.subject).collect().await;
        assert_eq!(got, ["a.1", "a.2"]);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken_and_a_full_buffer_drops() {
        use futures::StreamExt;
        let bus = LocalBus::new();
        let mut sub = crate::Subscription::Local(bus.subscribe("x", None));
        let publisher = bus.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            publisher.publish("x", Bytes::from_static(b"late"));
        });
        assert_eq!(
            sub.next().await.map(|m| m.payload),
            Some(Bytes::from_static(b"late"))
        );
        for _ in 0..SUBSCRIPTION_CAPACITY + 5 {
            bus.publish("x", Bytes::new());
        }
        let crate::Subscription::Local(local) = &sub else {
            unreachable!()
        };
        assert_eq!(local.queue.len(), SUBSCRIPTION_CAPACITY);
    }

    #[test]
    fn wildcards_match_like_nats() {
        let t = |s: &'static str| s.split('.').collect::<Vec<_>>();
        assert!(matches(&pat("a.b.>"), &t("a.b.c.d")));
        assert!(!matches(&pat("a.b.>"), &t("a.b")));
        assert!(matches(&pat("a.*.c"), &t("a.x.c")));
        assert!(!matches(&pat("a.*.c"), &t("a.x.c.d")));
        assert!(!matches(&pat("a.*"), &t("b.x")));
    }
}
