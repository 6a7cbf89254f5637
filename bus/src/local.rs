//! The in-process bus of the embedded default: NATS subject matching (`*`,
//! `>`), fan-out to plain subscribers, one member per queue group, bounded
//! buffers that drop and count like a NATS slow consumer, except where a publisher waits for
//! a queue group's room ([`LocalBus::publish_waiting`]).
//!
//! A subscription's buffer is a [`Mailbox`]: the gateway holds a subscription per session and
//! per user, and a tokio channel each made those the largest part of an idle socket's memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use smallvec::{smallvec, SmallVec};

use crate::mailbox::Mailbox;
use crate::{BusMessage, Headers, SUBSCRIPTION_CAPACITY};

#[derive(Clone, Debug, Default)]
pub struct LocalBus {
    inner: Arc<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    subs: RwLock<Subs>,
    next_id: AtomicU64,
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
    /// Publishers that wait for room wait for this plain subscriber too (the gateway's feeds).
    paced: bool,
    queue: Arc<Mailbox<BusMessage>>,
    /// Messages dropped on a full buffer, for a log that does not flood.
    dropped: AtomicU64,
    /// Round-robin position of the queue group whose member this is, kept by its first
    /// member: a group's own count, so that groups sharing subjects take turns each.
    turn: AtomicU64,
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
        self.subscribe_with(subject, group, false)
    }

    /// `paced`: a [`publish_waiting`](Self::publish_waiting) waits for room in this plain
    /// subscription's buffer too, as it does for every queue group.
    pub(crate) fn subscribe_with(
        &self,
        subject: &str,
        group: Option<String>,
        paced: bool,
    ) -> LocalSubscription {
        let queue = Arc::new(Mailbox::new(SUBSCRIPTION_CAPACITY));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Sub {
            id,
            group,
            paced,
            queue: queue.clone(),
            dropped: AtomicU64::new(0),
            turn: AtomicU64::new(0),
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
    /// matching queue group; never waits (a full buffer drops, as a NATS slow consumer).
    pub fn publish(&self, subject: impl Into<String>, payload: Bytes) {
        self.publish_with_headers(subject, None, payload);
    }

    /// As [`publish`](Self::publish), with metadata headers.
    pub fn publish_with_headers(
        &self,
        subject: impl Into<String>,
        headers: Option<Headers>,
        payload: Bytes,
    ) {
        for full in self.offer(subject.into(), headers, payload) {
            full.drop_it();
        }
    }

    /// As [`publish_with_headers`](Self::publish_with_headers), but a queue group whose every
    /// member is full is waited on for up to `patience` instead of losing the message: in one
    /// process the work (frames, audio) a socket handed in is paced back to that socket's
    /// reader, and so to the phone's TCP window, rather than dropped. Plain subscribers
    /// (research taps) still drop on a full buffer, unless subscribed paced (the gateway's feeds).
    pub async fn publish_waiting(
        &self,
        subject: impl Into<String>,
        headers: Option<Headers>,
        payload: Bytes,
        patience: Duration,
    ) {
        for full in self.offer(subject.into(), headers, payload) {
            full.wait(patience).await;
        }
    }

    /// Delivers what finds room; hands back each queue group's message that found none.
    ///
    /// Every frame and nudge of the embedded default passes here, most to a single
    /// recipient: the lists live on the stack, and the last recipient is handed the subject,
    /// payload and headers themselves rather than copies (a copy of a payload made from a
    /// `Vec` allocates its shared count, and each copy's count is one more write the
    /// consumer's thread must fetch).
    fn offer(&self, subject: String, headers: Option<Headers>, payload: Bytes) -> Vec<Full> {
        let subs = read(&self.inner.subs);
        let tokens: SmallVec<[&str; 8]> = if subs.wild.is_empty() {
            SmallVec::new()
        } else {
            subject.split('.').collect()
        };
        let exact = subs.exact.get(subject.as_str()).into_iter().flatten();
        let wild = subs
            .wild
            .iter()
            .filter(|(pattern, _)| matches(pattern, &tokens))
            .map(|(_, s)| s);
        let mut targets: SmallVec<[Target<'_>; 2]> = SmallVec::new();
        for sub in exact.chain(wild) {
            match &sub.group {
                None => targets.push(Target::Plain(sub)),
                Some(g) => {
                    let same = targets.iter_mut().find_map(|t| match t {
                        Target::Group(name, members) if *name == g.as_str() => Some(members),
                        _ => None,
                    });
                    match same {
                        Some(members) => members.push(sub),
                        None => targets.push(Target::Group(g.as_str(), smallvec![sub])),
                    }
                }
            }
        }
        drop(tokens);
        let mut full = Vec::new();
        let last = targets.len().saturating_sub(1);
        let mut owned = Some((subject, headers, payload));
        for (i, target) in targets.iter().enumerate() {
            let msg = if i == last {
                owned.take()
            } else {
                owned.clone()
            };
            let Some((subject, headers, payload)) = msg else {
                break;
            };
            let msg = BusMessage {
                subject,
                payload,
                headers,
                reply: None,
            };
            match target {
                Target::Plain(sub) => match (sub.queue.push(msg), sub.paced) {
                    (Ok(()), _) => {}
                    (Err(msg), true) => full.push(Full {
                        members: vec![(sub.id, sub.queue.clone())],
                        msg,
                    }),
                    (Err(_), false) => crate::count_dropped("local", sub.id, &sub.dropped),
                },
                Target::Group(_, members) => {
                    let start = members[0].turn.fetch_add(1, Ordering::Relaxed) as usize;
                    let turn = || (0..members.len()).map(|i| members[(start + i) % members.len()]);
                    // The next member in turn with room takes it.
                    let mut msg = Some(msg);
                    for member in turn() {
                        if let Some(m) = msg.take() {
                            msg = member.queue.push(m).err();
                        }
                    }
                    if let Some(msg) = msg {
                        full.push(Full {
                            members: turn().map(|s| (s.id, s.queue.clone())).collect(),
                            msg,
                        });
                    }
                }
            }
        }
        full
    }
}

/// Where one published message goes: a plain subscriber, or one member of a queue group.
enum Target<'a> {
    Plain(&'a Sub),
    Group(&'a str, SmallVec<[&'a Sub; 4]>),
}

/// A queue group's message that no member had room for.
struct Full {
    /// (subscription id, buffer), the member whose turn it was first.
    members: Vec<(u64, Arc<Mailbox<BusMessage>>)>,
    msg: BusMessage,
}

impl Full {
    /// Each wait on one member is this short, so a member with room is not passed over for
    /// long while another is waited on.
    const SLICE: Duration = Duration::from_millis(1);

    async fn wait(self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        let mut msg = self.msg;
        let mut turn = 0;
        loop {
            for (_, queue) in &self.members {
                msg = match queue.push(msg) {
                    Ok(()) => return,
                    Err(m) => m,
                };
            }
            let (_, queue) = &self.members[turn % self.members.len()];
            turn += 1;
            msg = match queue.push_waiting(msg, Self::SLICE).await {
                Ok(()) => return,
                Err(m) => m,
            };
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        Full {
            members: self.members,
            msg,
        }
        .drop_it();
    }

    fn drop_it(self) {
        let id = self.members.first().map_or(0, |(id, _)| *id);
        crate::count_dropped("local", id, &QUEUE_GROUP_DROPS);
    }
}

/// Queue-group messages dropped with every member full, for a log that does not flood.
static QUEUE_GROUP_DROPS: AtomicU64 = AtomicU64::new(0);

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
    async fn a_full_queue_group_paces_a_waiting_publisher_instead_of_dropping() {
        use futures::StreamExt;
        let bus = LocalBus::new();
        let mut sub = crate::Subscription::Local(bus.subscribe("work.*", Some("pool".into())));
        for i in 0..SUBSCRIPTION_CAPACITY {
            bus.publish("work.a", Bytes::from(i.to_string()));
        }
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                let last = Bytes::from_static(b"last");
                bus.publish_waiting("work.b", None, last, Duration::from_secs(5))
                    .await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!publisher.is_finished(), "the publisher waits for room");
        let mut seen = 0;
        while let Some(m) = sub.next().await {
            seen += 1;
            if m.subject == "work.b" {
                break;
            }
        }
        assert_eq!(seen, SUBSCRIPTION_CAPACITY + 1, "nothing dropped");
        assert!(publisher.await.is_ok());
    }

    #[tokio::test]
    async fn a_paced_plain_subscriber_is_waited_for_and_an_unpaced_one_drops() {
        let bus = LocalBus::new();
        let paced = bus.subscribe_with("feed.*", None, true);
        let tap = bus.subscribe("feed.*", None);
        for i in 0..SUBSCRIPTION_CAPACITY {
            bus.publish("feed.a", Bytes::from(i.to_string()));
        }
        let waiting = bus.publish_waiting("feed.b", None, Bytes::new(), Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("gives up after its patience");
        assert_eq!(paced.queue.len(), SUBSCRIPTION_CAPACITY);
        assert_eq!(tap.queue.len(), SUBSCRIPTION_CAPACITY);
        let mut got = Vec::new();
        assert!(paced.queue.take_all(&mut got).await);
        let waiting = bus.publish_waiting("feed.c", None, Bytes::new(), Duration::from_secs(5));
        waiting.await;
        assert_eq!(paced.queue.len(), 1, "the paced subscriber had room again");
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

    #[tokio::test]
    async fn one_message_reaches_every_plain_subscriber_and_one_member_per_group() {
        let bus = LocalBus::new();
        let exact = bus.subscribe("s.1.u", None);
        let wild = bus.subscribe("s.*.u", None);
        let pool = [
            bus.subscribe("s.>", Some("pool".into())),
            bus.subscribe("s.*.u", Some("pool".into())),
        ];
        let other = bus.subscribe("s.1.u", Some("other".into()));
        let unrelated = bus.subscribe("t.1.u", None);
        let headers = crate::header_map([("A-One", "1")]);
        for _ in 0..4 {
            bus.publish_with_headers("s.1.u", Some(headers.clone()), Bytes::from(vec![7u8; 3]));
        }
        let mut got = Vec::new();
        for sub in [&exact, &wild, &other] {
            assert_eq!(
                sub.queue.len(),
                4,
                "every plain subscriber and group gets each"
            );
            let mut batch = Vec::new();
            assert!(sub.queue.take_all(&mut batch).await);
            got.extend(batch);
        }
        let pooled: Vec<usize> = pool.iter().map(|s| s.queue.len()).collect();
        assert_eq!(
            pooled.iter().sum::<usize>(),
            4,
            "one member of the group takes each"
        );
        assert_eq!(pooled, [2, 2], "in turn");
        assert_eq!(unrelated.queue.len(), 0);
        for m in got {
            assert_eq!(m.subject, "s.1.u");
            assert_eq!(&m.payload[..], &[7u8; 3]);
            assert_eq!(m.header("A-One"), Some("1"));
        }
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
