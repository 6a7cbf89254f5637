//! Resuming after a drop (`?since=<event_id>`): a phone whose TCP connection dies mid-stream
//! (no close frame) reconnects and gets the nudges, pokes and speaker events it missed, each
//! once and in order, then the live ones; on the embedded default and across two gateways on
//! NATS + Redis. A `since` the history no longer covers gets `server.resync`; a bad one is
//! refused before the upgrade; the join reply and pongs say the last frame seq accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::audio::{model_dir, pcm, voice};
use common::history::{drain_until, ids, joined, seen, Reference, Seen, T};
use common::worker::start_worker;
use common::ws::{try_connect, ws_url, Ws};
use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

async fn poke(api: &Api, from: &Value, rid: &str) -> String {
    let (s, poke) = api
        .post(
            "/v1/pokes",
            Some(token(from)),
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(s, 201, "{poke}");
    poke["id"].as_str().unwrap().to_string()
}

/// `a` has a socket on `first` that dies after three nudges, and a second one (the
/// reference) that keeps producing nudges for `a`; `b` gets nudges of their own and pokes
/// `a` through `second`; `a` reconnects on `second` with `since` while nudges keep coming.
/// `pace` spaces the frames (past the nudge limit's window, when it is on).
async fn drop_and_resume(
    first: &Api,
    second: &Api,
    (a, b, rid): (Value, Value, String),
    sid: &str,
    pace: Duration,
) {
    let mut wa = Ws::connect(first.addr, sid, token(&a)).await;
    let hello = joined(&mut wa).await;
    assert_eq!(hello["sid"], sid, "{hello}");
    assert!(hello["last_event_id"].is_u64(), "{hello}");
    let mut reference = Reference {
        ws: Ws::connect(first.addr, sid, token(&a)).await,
        seen: Vec::new(),
    };
    let mut wb = Ws::connect(second.addr, sid, token(&b)).await;
    wb.expect_participants(&[uid(&a), uid(&b)], T).await;

    for seq in 1..=3 {
        reference.nudge(seq, pace).await;
    }
    let before = drain_until(&mut wa, &ids(&reference.seen)).await;
    assert_eq!(
        before, reference.seen,
        "both of a's sockets saw the same ids"
    );
    let since = before.last().unwrap().1;
    wa.kill();

    // while a's phone is away: b's own nudges, and nudges and pokes for a
    for i in 0..4 {
        tokio::time::sleep(pace).await;
        wb.frame(6.0, 100 + i).await;
        wb.expect("server.nudge", T).await;
        reference.nudge(10 + i, pace).await;
        if i % 2 == 0 {
            let id = poke(second, &b, &rid).await;
            reference
                .until(|e| e.0 == "server.poke" && e.2["id"] == id)
                .await;
        }
    }

    // nudges keep coming while a reconnects
    let producer = tokio::spawn({
        let (b, rid, second) = (b.clone(), rid.clone(), Api::new(second.addr));
        async move {
            for i in 0..8 {
                reference.nudge(20 + i, pace).await;
                if i == 3 {
                    let id = poke(&second, &b, &rid).await;
                    reference
                        .until(|e| e.0 == "server.poke" && e.2["id"] == id)
                        .await;
                }
            }
            reference
        }
    });
    tokio::time::sleep(pace.max(Duration::from_millis(20))).await;
    let mut resumed = Ws::resume(second.addr, sid, token(&a), since).await;
    let hello = joined(&mut resumed).await;
    assert!(hello["last_frame_seq"].as_i64().unwrap() >= 3, "{hello}");
    let reference = producer.await.unwrap();
    let expected: Vec<Seen> = reference
        .seen
        .iter()
        .filter(|e| e.1 > since)
        .cloned()
        .collect();
    let got = drain_until(&mut resumed, &ids(&expected)).await;
    assert_eq!(expected.len(), 4 + 2 + 8 + 1);
    assert_eq!(
        got.iter().map(|e| (&e.0, e.1)).collect::<Vec<_>>(),
        expected.iter().map(|e| (&e.0, e.1)).collect::<Vec<_>>(),
        "nothing missing, nothing twice, in order"
    );
    assert_eq!(got, expected, "the same payloads");
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_phone_gets_what_it_missed_once_and_in_order() {
    let app = spawn_app_with(Db::Sqlite, &[("NUDGE_RATE_LIMIT_SECONDS", "0")]).await;
    let (a, b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    drop_and_resume(&app, &app, (a, b, rid), &sid, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_phone_resumes_on_another_gateway_with_the_same_ids() {
    // the nudge limit on, in Redis
    let g1 = spawn_app_with(
        Db::Postgres,
        &[
            ("NATS_URL", NATS),
            ("REDIS_URL", REDIS),
            ("NUDGE_RATE_LIMIT_SECONDS", "0.05"),
        ],
    )
    .await;
    let g2 = g1.another_gateway().await;
    let stop = CancellationToken::new();
    let w1 = start_worker(&g1.env, 1, None, stop.clone()).await;
    let w2 = start_worker(&g1.env, 1, None, stop.clone()).await;
    let (a, b, rid) = g1.couple().await;
    let sid = g1.start_session(&a, &rid).await;
    drop_and_resume(&g1, &g2, (a, b, rid), &sid, Duration::from_millis(80)).await;
    stop.cancel();
    w1.stopped().await;
    w2.stopped().await;
}

/// Three seconds of voice as one audio stream: two segments, two speaker events.
async fn stream_voice(ws: &mut Ws) {
    ws.send(
        "client.audio_start",
        json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}),
    )
    .await;
    for chunk in pcm(&voice(0, 3.0)).chunks(3200) {
        ws.send_binary(chunk).await;
    }
    ws.send("client.audio_stop", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_events_are_replayed_to_everyone_in_the_session() {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("ECAPA_MODEL_DIR", model_dir().as_str()),
            ("NUDGE_RATE_LIMIT_SECONDS", "0"),
        ],
    )
    .await;
    let (a, b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut reference = Reference {
        ws: Ws::connect(app.addr, &sid, token(&a)).await,
        seen: Vec::new(),
    };
    let mut wb = Ws::connect(app.addr, &sid, token(&b)).await;
    joined(&mut wb).await;
    wb.expect_participants(&[uid(&a), uid(&b)], T).await;
    stream_voice(&mut reference.ws).await;
    let first = seen(&wb.expect("server.speaker", Duration::from_secs(20)).await);
    wb.kill();
    stream_voice(&mut reference.ws).await;
    let long = Duration::from_secs(20);
    while reference
        .seen
        .iter()
        .filter(|e| e.0 == "server.speaker")
        .count()
        < 4
    {
        tokio::time::timeout(long, reference.until(|e| e.0 == "server.speaker"))
            .await
            .unwrap();
    }
    let mut resumed = Ws::resume(app.addr, &sid, token(&b), first.1).await;
    joined(&mut resumed).await;
    let expected: Vec<Seen> = reference
        .seen
        .iter()
        .filter(|e| e.0 == "server.speaker" && e.1 > first.1)
        .cloned()
        .collect();
    let got = drain_until(&mut resumed, &ids(&expected)).await;
    assert_eq!(expected.len(), 3, "{:?}", reference.seen);
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_older_than_the_window_gets_a_resync_then_live_events() {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("NUDGE_RATE_LIMIT_SECONDS", "0"),
            ("WEBSOCKET_RESUME_EVENTS", "3"),
        ],
    )
    .await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut reference = Reference {
        ws: Ws::connect(app.addr, &sid, token(&a)).await,
        seen: Vec::new(),
    };
    for seq in 1..=6 {
        reference.nudge(seq, Duration::ZERO).await;
    }
    assert_eq!(ids(&reference.seen), [1, 2, 3, 4, 5, 6]);

    let mut late = Ws::resume(app.addr, &sid, token(&a), 1).await;
    assert_eq!(joined(&mut late).await["last_event_id"], 6);
    let resync = late.next_json(T).await.unwrap();
    assert_eq!(resync["type"], "server.resync", "{resync}");
    assert_eq!(
        resync["payload"],
        json!({"reason": "history_expired", "oldest_event_id": 4, "last_event_id": 6})
    );
    // then live events, from the next id on
    reference.nudge(7, Duration::ZERO).await;
    let live = late.expect("server.nudge", T).await;
    assert_eq!(
        (live["event_id"].as_u64(), &live["payload"]["frame_seq"]),
        (Some(7), &json!(7))
    );

    // within the window: the rest is replayed
    let mut recent = Ws::resume(app.addr, &sid, token(&a), 5).await;
    joined(&mut recent).await;
    assert_eq!(ids(&drain_until(&mut recent, &[6, 7]).await), [6, 7]);

    // an id the session never reached (a reset history, or a bogus since)
    let mut ahead = Ws::resume(app.addr, &sid, token(&a), 99).await;
    joined(&mut ahead).await;
    assert_eq!(
        ahead.expect("server.resync", T).await["payload"]["last_event_id"],
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_since_is_refused_before_the_upgrade() {
    let app = spawn_app(Db::Sqlite).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    for bad in ["abc", "-1", "1.5", "", "99999999999999999999"] {
        let path = format!("/v1/sessions/{sid}/ws?token={}&since={bad}", token(&a));
        let (status, body) = app.get(&path, None).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_error(&body, "invalid_since");
        let url = format!("{}&since={bad}", ws_url(app.addr, &sid, token(&a)));
        assert_eq!(try_connect(&url, None).await.err(), Some(400), "{bad:?}");
    }
    let mut ok = Ws::resume(app.addr, &sid, token(&a), 0).await;
    assert_eq!(joined(&mut ok).await["last_event_id"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_reply_and_pongs_carry_the_last_accepted_frame_seq() {
    let app = spawn_app(Db::Sqlite).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    let hello = joined(&mut ws).await;
    assert_eq!(hello["last_frame_seq"], Value::Null, "{hello}");
    ws.send("client.ping", json!({})).await;
    assert_eq!(
        ws.expect("server.pong", T).await["payload"],
        json!({"last_frame_seq": null})
    );
    for seq in 1..=5 {
        ws.frame(1.0, seq).await;
    }
    ws.send("client.ping", json!({})).await;
    assert_eq!(
        ws.expect("server.pong", T).await["payload"],
        json!({"last_frame_seq": 5})
    );
    ws.kill();
    let mut again = Ws::connect(app.addr, &sid, token(&a)).await;
    assert_eq!(joined(&mut again).await["last_frame_seq"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_frame_seq_follows_the_user_to_another_gateway() {
    let g1 = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let g2 = g1.another_gateway().await;
    let (a, _b, rid) = g1.couple().await;
    let sid = g1.start_session(&a, &rid).await;
    let mut ws = Ws::connect(g1.addr, &sid, token(&a)).await;
    joined(&mut ws).await;
    for seq in 1..=5 {
        ws.frame(1.0, seq).await;
    }
    ws.send("client.ping", json!({})).await;
    assert_eq!(
        ws.expect("server.pong", T).await["payload"]["last_frame_seq"],
        5
    );
    // the socket is still open: the value is shared within ~100 ms anyway
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut other = Ws::connect(g2.addr, &sid, token(&a)).await;
    assert_eq!(joined(&mut other).await["last_frame_seq"], 5);

    // and when a socket drops, what it sent last
    for seq in 6..=8 {
        ws.frame(1.0, seq).await;
    }
    ws.send("client.ping", json!({})).await;
    ws.expect("server.pong", T).await;
    ws.kill();
    let mut last = Value::Null;
    for _ in 0..50 {
        let mut again = Ws::connect(g2.addr, &sid, token(&a)).await;
        last = joined(&mut again).await["last_frame_seq"].clone();
        if last == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_nudges_during_the_reconnect_arrives_exactly_once() {
    let app = spawn_app_with(Db::Sqlite, &[("NUDGE_RATE_LIMIT_SECONDS", "0")]).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut reference = Reference {
        ws: Ws::connect(app.addr, &sid, token(&a)).await,
        seen: Vec::new(),
    };
    let since = reference.nudge(1, Duration::ZERO).await.1;
    // frames back to back: nudges are produced while the new socket joins, reads the
    // history and replays it, so some are both queued live and in the replay. Fewer than
    // the send queue holds: a socket whose queue fills while it is greeted is a slow
    // reader, closed with 1013, and the phone resumes again from the last id it saw.
    const BURST: i64 = 200;
    const _: () = assert!((BURST as usize) < inside_gateway::realtime::hub::SEND_QUEUE);
    let burst = tokio::spawn(async move {
        for seq in 2..=BURST + 1 {
            reference.ws.frame(6.0, seq).await;
        }
        while reference.seen.len() < (BURST + 1) as usize {
            reference.until(|_| true).await;
        }
        reference
    });
    let mut resumed = Ws::resume(app.addr, &sid, token(&a), since).await;
    joined(&mut resumed).await;
    let reference = burst.await.unwrap();
    let mut want: Vec<u64> = reference
        .seen
        .iter()
        .map(|e| e.1)
        .filter(|id| *id > since)
        .collect();
    want.sort_unstable();
    let mut got = ids(&drain_until(&mut resumed, &want).await);
    got.sort_unstable();
    let before = got.len();
    got.dedup();
    assert_eq!(before, got.len(), "an event arrived twice");
    assert_eq!(got, want);
}
