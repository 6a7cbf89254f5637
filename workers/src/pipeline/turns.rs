//! The nudge limit on NATS when the gateways follow the events stream: one nudge per
//! (session, user) per window, judged by the stream itself. A worker remembers each member's
//! newest nudge (its id and when it went out) and, once the window after it is over, publishes
//! the next nudge naming it as the subject's newest (`EventStream::publish_after`): the stream
//! stores it, and the gateways deliver it, only if no other worker got there first. The check
//! rides on the publish that delivers the nudge, so the worker that knows the member's newest
//! nudge takes the next turn with no round trip before it (the limit in Redis cost a `SET NX`
//! round trip on every nudge that went out).
//!
//! A worker that guessed wrong (another worker nudged since, or it never saw the member) is
//! refused, reads the subject's newest nudge from the stream, and publishes again once the
//! window after it is over, or learns it is not. 50 ms after each stored nudge the delivery
//! also marks the window taken in the shared limiter (Redis), off the phone's path, so a worker
//! still limiting in Redis (an older release during an upgrade, or one that found no
//! JetStream) keeps to it too.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use inside_bus::history::{EventStream, Retention, Stored, Storing};
use inside_bus::{Bus, Headers};
use inside_schemas::Nudge;
use uuid::Uuid;

use super::PipelineConfig;

/// Publishes of one nudge before giving up: each refusal means another worker nudged the
/// member meanwhile, so a second one is already rare.
const TRIES: usize = 3;
/// Members remembered before those whose window is long over are forgotten.
const SWEEP_AT: usize = 100_000;

/// The limit kept by the events stream where it can be: on NATS, with a nudge window and the
/// history on the bus (so the gateways deliver what the stream stores, and only that), and a
/// stream that keeps a nudge at least a window. Makes the stream when no gateway has yet.
/// `None`: the limiter judges the limit.
pub async fn for_deployment(
    bus: &Bus,
    config: &PipelineConfig,
    history_on_bus: bool,
) -> Option<NudgeTurns> {
    let (Some(client), Some(window), Some(resume), true) = (
        bus.nats(),
        config.nudge_window,
        config.resume_window,
        history_on_bus,
    ) else {
        return None;
    };
    let keep = Retention {
        per_subject: resume.events as u64,
        max_age: resume.max_age,
        in_memory: config.resume_in_memory,
    };
    let stream = match EventStream::open(client, bus.subjects(), keep).await {
        Ok(stream) => stream,
        // as the gateways do without JetStream: no history, and the limit in the limiter
        Err(e) => {
            tracing::warn!(error = %e, "no events stream; the nudge limit is kept in the limiter");
            return None;
        }
    };
    let turns = NudgeTurns::new(stream, window);
    if turns.is_none() {
        tracing::info!("the events stream keeps a nudge for less than NUDGE_RATE_LIMIT_SECONDS; the nudge limit is kept in the limiter");
    }
    turns
}

/// True when `payload` is a nudge a gateway shows (`gateway::realtime::inbound` checks its
/// text too): only such a nudge takes a member's window, so a malformed one forged on the bus
/// cannot silence the real ones.
fn shown(payload: &[u8]) -> bool {
    serde_json::from_slice::<Nudge>(payload).is_ok_and(|n| (1..=3).contains(&n.intensity))
}

/// A member's newest nudge, as far as this process knows.
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// Its id (0: the stream holds none) and when it went out (`None`: longer ago than any
    /// window).
    Last { id: u64, at: Option<Instant> },
    /// This process is publishing one and has not heard back.
    Taking,
}

/// A nudge published in its turn, waiting for the stream's answer.
pub struct Taken {
    storing: Storing,
    at: Instant,
    subject: String,
    headers: Headers,
    payload: Bytes,
}

/// The nudge limit kept by the events stream.
pub struct NudgeTurns {
    stream: EventStream,
    window: Duration,
    known: DashMap<(Uuid, Uuid), Turn>,
}

impl NudgeTurns {
    /// `None` when the stream forgets a nudge sooner than `window`: a member's newest nudge
    /// must still be there when the window after it ends.
    pub fn new(stream: EventStream, window: Duration) -> Option<Self> {
        if stream.keeps_for().is_some_and(|kept| kept < window) {
            return None;
        }
        Some(Self {
            stream,
            window,
            known: DashMap::new(),
        })
    }

    /// True when this process knows a nudge to `uid` went out in the current window, or is
    /// going out.
    pub fn limited_here(&self, sid: Uuid, uid: Uuid) -> bool {
        self.known.get(&(sid, uid)).is_some_and(|t| self.limits(*t))
    }

    /// True while `turn` keeps its member from another nudge.
    fn limits(&self, turn: Turn) -> bool {
        match turn {
            Turn::Taking => true,
            Turn::Last { at, .. } => at.is_some_and(|at| at.elapsed() < self.window),
        }
    }

    /// Publishes a nudge to `uid` if, as far as this process knows, its window is over:
    /// `None` when it is not (or the publish failed); else the nudge on its way, for
    /// [`settle`](Self::settle).
    pub async fn publish(
        &self,
        sid: Uuid,
        uid: Uuid,
        subject: String,
        headers: Headers,
        payload: Bytes,
    ) -> Option<Taken> {
        let after = self.take(sid, uid)?;
        let at = Instant::now();
        let storing = self
            .send(sid, uid, &subject, &headers, &payload, after)
            .await?;
        Some(Taken {
            storing,
            at,
            subject,
            headers,
            payload,
        })
    }

    /// Publishes `payload` after the member's nudge `after`; on failure forgets the member's
    /// turn (the next nudge learns it afresh) and `None`.
    async fn send(
        &self,
        sid: Uuid,
        uid: Uuid,
        subject: &str,
        headers: &Headers,
        payload: &Bytes,
        after: u64,
    ) -> Option<Storing> {
        match self
            .stream
            .publish_after(subject.to_string(), headers, payload.clone(), after)
            .await
        {
            Ok(storing) => Some(storing),
            Err(e) => {
                tracing::warn!(%sid, error = %e, "publishing a nudge failed");
                self.known.remove(&(sid, uid));
                None
            }
        }
    }

    /// The newest nudge's id to publish after, marking the member as being published to;
    /// `None` when its window is not over.
    fn take(&self, sid: Uuid, uid: Uuid) -> Option<u64> {
        if self.known.len() > SWEEP_AT {
            self.known.retain(|_, t| self.limits(*t));
        }
        let mut turn = self.known.entry((sid, uid)).or_insert(Turn::Last {
            // a member this process never nudged: most likely nobody has
            id: 0,
            at: None,
        });
        match *turn {
            Turn::Last { id, .. } if !self.limits(*turn) => {
                *turn = Turn::Taking;
                Some(id)
            }
            _ => None,
        }
    }

    /// Waits for the stream's answer to `taken`; when another nudge got there first, learns
    /// it and publishes again if the window after it is over. The nudge's id when it was
    /// stored (and so delivered).
    pub async fn settle(&self, sid: Uuid, uid: Uuid, taken: Taken) -> Option<u64> {
        let Taken {
            mut storing,
            mut at,
            subject,
            headers,
            payload,
        } = taken;
        for _ in 0..TRIES {
            let after = match storing.outcome().await {
                Stored::Id(id) => {
                    self.known
                        .insert((sid, uid), Turn::Last { id, at: Some(at) });
                    return Some(id);
                }
                Stored::NotAfter => match self.learn(sid, uid, &subject).await? {
                    (_, Some(_)) => return None,
                    (id, None) => id,
                },
                Stored::Unknown(e) => {
                    tracing::warn!(%sid, error = %e, "no answer from the events stream for a nudge");
                    return self.stored_anyway(sid, uid, &subject, &payload).await;
                }
            };
            at = Instant::now();
            storing = self
                .send(sid, uid, &subject, &headers, &payload, after)
                .await?;
        }
        // taken from under us every time: someone nudged the member
        self.known.remove(&(sid, uid));
        None
    }

    /// Reads `uid`'s newest nudge and remembers it: its id, and when it went out if that is
    /// within the window (`None`: the window after it is over). `None` when it cannot be read.
    async fn learn(&self, sid: Uuid, uid: Uuid, subject: &str) -> Option<(u64, Option<Instant>)> {
        let last = match self.stream.last_of(subject).await {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!(%sid, error = %e, "reading a member's newest nudge failed; nudge skipped");
                self.known.remove(&(sid, uid));
                return None;
            }
        };
        let (id, at) = match last {
            // something no gateway would show (forged on the bus) took no window
            Some(l) if !shown(&l.payload) => (l.id, None),
            Some(l) => (l.id, Instant::now().checked_sub(l.age)),
            None => (0, None),
        };
        let at = at.filter(|at| at.elapsed() < self.window);
        self.known.insert(
            (sid, uid),
            match at {
                Some(_) => Turn::Last { id, at },
                // ours to take again right away
                None => Turn::Taking,
            },
        );
        Some((id, at))
    }

    /// After a publish whose answer never came: whether the subject's newest nudge is ours.
    async fn stored_anyway(
        &self,
        sid: Uuid,
        uid: Uuid,
        subject: &str,
        payload: &Bytes,
    ) -> Option<u64> {
        match self.stream.last_of(subject).await {
            Ok(Some(last)) if last.payload == *payload => {
                let at = Instant::now().checked_sub(last.age);
                self.known
                    .insert((sid, uid), Turn::Last { id: last.id, at });
                Some(last.id)
            }
            _ => {
                self.known.remove(&(sid, uid));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use inside_bus::history::Missed;
    use inside_bus::Subjects;
    use inside_testkit::nats_server::{NatsServer, WORKER};

    const NATS: &str = "nats://127.0.0.1:4222";
    const WINDOW: Duration = Duration::from_millis(600);

    /// Two workers' limits on one fresh stream, each on a connection of `clients`.
    async fn two_workers(clients: [async_nats::Client; 2]) -> (Bus, NudgeTurns, NudgeTurns) {
        let subjects = Subjects::new(format!("t{}", Uuid::new_v4().simple()));
        let keep = Retention {
            per_subject: 100,
            max_age: Duration::from_secs(60),
            in_memory: true,
        };
        let mut workers = Vec::new();
        for client in &clients {
            let stream = EventStream::open(client, &subjects, keep).await.unwrap();
            workers.push(NudgeTurns::new(stream, WINDOW).unwrap());
        }
        let [client, _] = clients;
        let (w2, w1) = (workers.pop().unwrap(), workers.pop().unwrap());
        (Bus::Nats { client, subjects }, w1, w2)
    }

    async fn shared_server() -> async_nats::Client {
        async_nats::connect(NATS)
            .await
            .expect("nats-server with JetStream on 127.0.0.1:4222 (scripts/test starts it)")
    }

    /// Publishes a nudge from `w` in its turn: whether it was stored.
    async fn nudge(w: &NudgeTurns, bus: &Bus, sid: Uuid, uid: Uuid, body: &str) -> bool {
        let subject = bus.subjects().nudges(sid, uid);
        let payload = Bytes::from(shown_nudge(body));
        match w.publish(sid, uid, subject, Headers::new(), payload).await {
            Some(taken) => w.settle(sid, uid, taken).await.is_some(),
            None => false,
        }
    }

    /// A nudge a gateway would show, with `text` as its message.
    fn shown_nudge(text: &str) -> String {
        serde_json::json!({"nudge_type": "SLOW_DOWN", "intensity": 1, "message": text,
            "frame_seq": null, "frame_timestamp_ms": null})
        .to_string()
    }

    /// Turns taken, refused and learned by two workers over three windows.
    async fn one_nudge_per_window(bus: &Bus, w1: &NudgeTurns, w2: &NudgeTurns) {
        let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(nudge(w1, bus, sid, uid, "1").await, "nobody nudged yet");
        // w1 knows its window is taken and publishes nothing
        assert!(w1.limited_here(sid, uid));
        assert!(!nudge(w1, bus, sid, uid, "x").await);
        // w2 never saw the member: refused by the stream, it learns the window is taken
        assert!(!w2.limited_here(sid, uid));
        assert!(!nudge(w2, bus, sid, uid, "x").await);
        assert!(w2.limited_here(sid, uid));

        tokio::time::sleep(WINDOW).await;
        // the window is over for both; w2 goes first, and w1's stale turn is refused
        assert!(nudge(w2, bus, sid, uid, "2").await);
        assert!(!nudge(w1, bus, sid, uid, "x").await);
        assert!(w1.limited_here(sid, uid), "w1 learned w2's nudge");

        tokio::time::sleep(WINDOW).await;
        // both at once, many times over: one stored
        let tries = (0..8).map(|i| {
            let w = if i % 2 == 0 { w1 } else { w2 };
            nudge(w, bus, sid, uid, "3")
        });
        let stored = futures::future::join_all(tries).await;
        assert_eq!(stored.iter().filter(|s| **s).count(), 1, "{stored:?}");

        // the stream holds exactly the three that went out
        let subject = bus.subjects().nudges(sid, uid);
        let last = w1.stream.last_of(&subject).await.unwrap().unwrap();
        let Missed::Events(held) = w1.stream.missed(&[subject], 0, last.id).await.unwrap() else {
            panic!("all held")
        };
        let bodies: Vec<_> = held.iter().map(|l| l.msg.payload.clone()).collect();
        assert_eq!(bodies, ["1", "2", "3"].map(|t| Bytes::from(shown_nudge(t))));
    }

    #[tokio::test]
    async fn a_forged_nudge_no_gateway_shows_takes_no_window() {
        let (bus, w1, _) = two_workers([shared_server().await, shared_server().await]).await;
        let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
        let forger = bus.nats().unwrap();
        let subject = bus.subjects().nudges(sid, uid);
        for forged in [
            "not json",
            r#"{"nudge_type":"SLOW_DOWN","intensity":9,"message":"x","frame_seq":null,"frame_timestamp_ms":null}"#,
        ] {
            forger
                .publish(subject.clone(), forged.into())
                .await
                .unwrap();
        }
        forger.flush().await.unwrap();
        // refused (the forged one is the subject's newest), read back, and published after it
        assert!(nudge(&w1, &bus, sid, uid, "real").await);
        assert!(w1.limited_here(sid, uid));
        // a forged nudge a gateway would show does take the window: the phone saw it
        tokio::time::sleep(WINDOW).await;
        forger
            .publish(subject.clone(), shown_nudge("forged").into())
            .await
            .unwrap();
        forger.flush().await.unwrap();
        assert!(!nudge(&w1, &bus, sid, uid, "real").await);
        let js = async_nats::jetstream::new(forger.clone());
        js.delete_stream(bus.subjects().events_stream()).await.ok();
    }

    #[tokio::test]
    async fn one_nudge_per_window_across_workers_judged_by_the_stream() {
        let (bus, w1, w2) = two_workers([shared_server().await, shared_server().await]).await;
        one_nudge_per_window(&bus, &w1, &w2).await;
        let js = async_nats::jetstream::new(bus.nats().unwrap().clone());
        js.delete_stream(bus.subjects().events_stream()).await.ok();
    }

    /// The worker identity of `deploy/nats/nats-server.conf` may make the stream, publish in
    /// turn and read a member's newest nudge.
    #[tokio::test]
    async fn the_shipped_nats_configuration_lets_workers_take_turns() {
        let nats = NatsServer::shipped();
        let clients = [nats.connect(WORKER).await, nats.connect(WORKER).await];
        let (bus, w1, w2) = two_workers(clients).await;
        one_nudge_per_window(&bus, &w1, &w2).await;
        assert_eq!(nats.violations(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_stream_that_forgets_sooner_than_the_window_cannot_judge_it() {
        let (bus, w1, _) = two_workers([shared_server().await, shared_server().await]).await;
        assert!(NudgeTurns::new(w1.stream.clone(), Duration::from_secs(61)).is_none());
        assert!(NudgeTurns::new(w1.stream.clone(), Duration::from_secs(60)).is_some());
        let js = async_nats::jetstream::new(bus.nats().unwrap().clone());
        js.delete_stream(bus.subjects().events_stream()).await.ok();
    }
}
