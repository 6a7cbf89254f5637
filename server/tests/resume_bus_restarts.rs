//! Resuming when the bus itself had an outage, on NATS + Redis with a worker: a NATS server
//! that restarts keeps the events stream on disk, so ids go on from where they were and a
//! `since` from before the restart still resumes with nothing missing; a stream made anew
//! (deleted by hand) gets every socket a `server.resync` within seconds, and events flow again
//! with ids past the old ones, so an old `since` reads as gone, never as a new event; and
//! events the stream let go before a gateway read them get its sockets a `server.resync`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::history::{drain, drain_until, ids, is_history, joined, seen, Reference, T};
use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use inside_bus::history::RESTART_GAP;
use inside_testkit::nats_server::NatsServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";
/// How long the gateway, the worker and the hub's feed get to find a restarted server.
const BACK_WITHIN: Duration = Duration::from_secs(30);

/// A gateway and a worker on the NATS at `url` (with Redis, every over-threshold frame a
/// nudge), and member `a` of a session with a socket producing nudges.
struct Coached {
    app: TestApp,
    stop: CancellationToken,
    worker: inside_workers::pipeline::Pipeline,
    a: serde_json::Value,
    sid: String,
    reference: Reference,
}

impl Coached {
    async fn stop(self) {
        self.stop.cancel();
        self.worker.stopped().await;
    }
}

async fn coached(url: &str) -> Coached {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("NATS_URL", url),
            ("REDIS_URL", REDIS),
            ("NUDGE_RATE_LIMIT_SECONDS", "0"),
        ],
    )
    .await;
    let stop = CancellationToken::new();
    let worker = start_worker(&app.env, 1, None, stop.clone()).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let reference = Reference {
        ws: Ws::connect(app.addr, &sid, token(&a)).await,
        seen: Vec::new(),
    };
    Coached {
        app,
        stop,
        worker,
        a,
        sid,
        reference,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_keeps_the_event_ids_and_a_resume_across_it_misses_nothing() {
    let mut nats = NatsServer::with_jetstream();
    let url = nats.url();
    let mut c = coached(&url).await;
    let (app, a, sid) = (&c.app, &c.a, c.sid.clone());
    let reference = &mut c.reference;
    let mut wa = Ws::connect(app.addr, &sid, token(a)).await;
    joined(&mut wa).await;
    for seq in 1..=3 {
        reference.nudge(seq, Duration::ZERO).await;
    }
    let before = drain_until(&mut wa, &ids(&reference.seen)).await;
    assert_eq!(before, reference.seen);
    let since = before.last().unwrap().1;
    wa.kill();

    nats.restart();
    // frames until one comes back as a nudge: gateway, worker and feed are all back
    let deadline = Instant::now() + BACK_WITHIN;
    let mut seq = 10;
    'back: loop {
        assert!(
            Instant::now() < deadline,
            "no nudge within {BACK_WITHIN:?} of the restart"
        );
        reference.ws.frame(6.0, seq).await;
        seq += 1;
        while let Some(m) = reference.ws.next_json(Duration::from_millis(500)).await {
            assert_ne!(m["type"], "server.resync", "the ids started again: {m}");
            if is_history(&m) {
                reference.seen.push(seen(&m));
                break 'back;
            }
        }
    }
    for n in 0..3 {
        reference.nudge(100 + n, Duration::ZERO).await;
    }
    // frames sent while the server was away may come back late: all of them, then quiet
    reference
        .seen
        .extend(drain(&mut reference.ws, Duration::from_secs(1)).await);
    let all = ids(&reference.seen);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");

    let expected: Vec<_> = reference
        .seen
        .iter()
        .filter(|e| e.1 > since)
        .cloned()
        .collect();
    let mut resumed = Ws::resume(app.addr, &sid, token(a), since).await;
    joined(&mut resumed).await;
    let got = drain_until(&mut resumed, &ids(&expected)).await;
    assert!(expected.len() >= 4, "{expected:?}");
    assert_eq!(got, expected, "nothing missing, nothing twice, in order");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_made_anew_sends_every_socket_a_resync_and_events_flow_with_its_ids() {
    let mut c = coached(NATS).await;
    let (app, a, sid) = (&c.app, &c.a, c.sid.clone());
    let reference = &mut c.reference;
    for seq in 1..=2 {
        reference.nudge(seq, Duration::ZERO).await;
    }
    let old = reference.seen.last().unwrap().1;

    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    js.delete_stream(app.state.bus.subjects().events_stream())
        .await
        .expect("deleting the events stream");
    // the gateway checks every 2 s
    let resync = reference.ws.expect("server.resync", T).await;
    // the new stream's ids go on past the old ones
    let moved = old + RESTART_GAP;
    assert_eq!(
        resync["payload"],
        json!({"reason": "history_expired", "oldest_event_id": null, "last_event_id": moved}),
        "{resync}"
    );

    // the new stream's ids, live
    let first = reference.nudge(3, Duration::ZERO).await.1;
    let second = reference.nudge(4, Duration::ZERO).await.1;
    assert_eq!((first, second), (moved + 1, moved + 2));
    // a since of the old stream: resync; one of the new: the rest
    let mut stale = Ws::resume(app.addr, &sid, token(a), old).await;
    assert_eq!(joined(&mut stale).await["last_event_id"], second);
    assert_eq!(
        stale.expect("server.resync", T).await["payload"]["last_event_id"],
        second
    );
    let mut recent = Ws::resume(app.addr, &sid, token(a), first).await;
    joined(&mut recent).await;
    assert_eq!(ids(&drain_until(&mut recent, &[second]).await), [second]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_stream_let_go_unread_get_every_socket_a_resync_before_the_next() {
    let mut c = coached(NATS).await;
    let (app, a, sid) = (&c.app, &c.a, c.sid.clone());
    let mut other = Ws::connect(app.addr, &sid, token(a)).await;
    joined(&mut other).await;
    let reference = &mut c.reference;
    for seq in 1..=2 {
        reference.nudge(seq, Duration::ZERO).await;
    }
    let old = reference.seen.last().unwrap().1;

    // what a feed too far behind finds: the stream let go of ids it had not read yet (here a
    // purge past the newest event, so the next id skips nine)
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let stream = js
        .get_stream(app.state.bus.subjects().events_stream())
        .await
        .unwrap();
    stream.purge().sequence(old + 10).await.unwrap();
    reference.ws.frame(6.0, 3).await;

    for ws in [&mut reference.ws, &mut other] {
        let mut before = Vec::new();
        let nudge = loop {
            let m = ws.next_json(T).await.expect("the nudge of frame 3");
            if m["type"] == "server.nudge" && m["payload"]["frame_seq"] == 3 {
                break m;
            }
            before.push(m);
        };
        let resync = before
            .iter()
            .find(|m| m["type"] == "server.resync")
            .unwrap_or_else(|| panic!("no server.resync before the nudge: {before:?}"));
        assert_eq!(
            resync["payload"],
            json!({"reason": "history_expired", "oldest_event_id": null, "last_event_id": old}),
        );
        assert_eq!(nudge["event_id"], old + 10);
    }
    // a gap is one resync, not one per event after it
    let second = reference.nudge(4, Duration::ZERO).await.1;
    assert_eq!(second, old + 11);
    let mut later = Vec::new();
    while let Some(m) = other.next_json(Duration::from_millis(300)).await {
        later.push(m);
    }
    assert!(
        later.iter().all(|m| m["type"] != "server.resync"),
        "{later:?}"
    );
    assert!(later.iter().any(|m| m["event_id"] == second), "{later:?}");
    c.stop().await;
}
