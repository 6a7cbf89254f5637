//! The report counts every frame exactly once: frames a gateway accepted just before finalize
//! are all in the report (embedded, and on NATS with two workers sharing the frames), each
//! member's talk time comes from their frames in the order they were received, a frame racing
//! the finalize is either in the report or was never published, a worker still records what
//! reached the bus for a finalizing session, and a report that could not get everything says
//! so instead of coming out short.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use inside_schemas::FeatureFrame;
use inside_store::sockets::Counts;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const T: Duration = Duration::from_secs(10);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

both_databases!(
    frames_accepted_just_before_finalize_are_all_in_the_report,
    frames_racing_the_finalize_are_in_the_report_exactly_when_published,
    a_report_missing_what_was_published_says_so,
);

fn uid(pair: &Value) -> Uuid {
    pair["user"]["id"].as_str().unwrap().parse().unwrap()
}

/// `n` speaking frames 100 ms apart on the phone's clock (epoch ms, as phones send it).
async fn send_frames(ws: &mut Ws, n: i64) {
    for i in 0..n {
        ws.send(
            "client.feature_frame",
            json!({"timestamp_ms": 1_700_000_000_000i64 + i * 100, "speaking_rate": 2.0, "overlap_ratio": 0.1, "seq": i}),
        )
        .await;
    }
}

/// A pong proves the gateway read (and published) everything sent before the ping.
async fn pong(ws: &mut Ws) {
    ws.send("client.ping", json!({})).await;
    ws.expect("server.pong", T).await;
}

fn speaker(report: &Value, user: Uuid) -> &Value {
    report["speakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user_id"] == user.to_string())
        .unwrap_or_else(|| panic!("no line for {user}: {report}"))
}

/// 300 frames of a and 100 of b, a pong each, then finalize at once: every frame is in the
/// report, and each member's talk time is their frames times the phone's 100 ms cadence.
async fn everything_before_finalize_is_counted(api: &Api, (a, b, rid): &(Value, Value, String)) {
    let sid = api.start_session(a, rid).await;
    let mut wa = Ws::connect(api.addr, &sid, token(a)).await;
    let mut wb = Ws::connect(api.addr, &sid, token(b)).await;
    send_frames(&mut wa, 300).await;
    send_frames(&mut wb, 100).await;
    pong(&mut wa).await;
    pong(&mut wb).await;
    let (s, body) = api.finalize(&sid, Some(token(a))).await;
    assert_eq!(s, 202, "{body}");
    let report = api.wait_report(&sid, token(a)).await;
    assert_eq!(report["frames"], 400, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["incomplete_reason"], Value::Null, "{report}");
    assert_eq!(speaker(&report, uid(a))["talk_time_s"], 30.0, "{report}");
    assert_eq!(speaker(&report, uid(b))["talk_time_s"], 10.0, "{report}");
    // the server's clock: seconds, not the phone's epoch
    let duration = report["duration_s"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&duration), "{report}");
}

async fn frames_accepted_just_before_finalize_are_all_in_the_report(db: Db) {
    let app = spawn_app(db).await;
    let couple = app.couple().await;
    for _ in 0..3 {
        everything_before_finalize_is_counted(&app, &couple).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_accepted_just_before_finalize_are_all_in_the_report_on_nats_with_two_workers() {
    let app = spawn_app_with(
        Db::Postgres,
        &[
            ("NATS_URL", NATS),
            ("REDIS_URL", REDIS),
            ("NUDGE_RATE_LIMIT_SECONDS", "30"),
        ],
    )
    .await;
    let stop = CancellationToken::new();
    let w1 = start_worker(&app.env, 2, None, stop.clone()).await;
    let w2 = start_worker(&app.env, 2, None, stop.clone()).await;
    let couple = app.couple().await;
    for _ in 0..3 {
        everything_before_finalize_is_counted(&app, &couple).await;
    }
    stop.cancel();
    w1.stopped().await;
    w2.stopped().await;
}

/// Frames still being sent while the finalize lands: some are read and published before the
/// socket stops, the rest never are; the report has exactly the published ones.
async fn frames_racing_the_finalize_are_in_the_report_exactly_when_published(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    pong(&mut ws).await;
    let sending = async {
        for i in 0..2_000i64 {
            let frame = json!({"type": "client.feature_frame", "sid": sid, "payload": {"timestamp_ms": i, "speaking_rate": 1.0, "overlap_ratio": 0.0, "seq": i}});
            if !ws.try_send_text(&frame.to_string()).await {
                break;
            }
        }
    };
    let finalizing = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        app.finalize(&sid, Some(token(&a))).await
    };
    let (_, (s, _)) = tokio::join!(sending, finalizing);
    assert_eq!(s, 202);
    let report = app.wait_report(&sid, token(&a)).await;
    let published = app
        .state
        .store
        .published_counts(sid.parse().unwrap())
        .await
        .unwrap();
    assert!(published.open.is_empty(), "{published:?}");
    let sent = published.per_member[&uid(&a)].frames;
    assert_eq!(report["frames"], sent, "{report}");
    assert!(sent <= 2_000);
    assert_eq!(report["complete"], true, "{report}");
}

/// A socket row its gateway never closed (the gateway died), or frames published that never
/// arrived: the report is written after the wait, marked incomplete with the reason.
async fn a_report_missing_what_was_published_says_so(db: Db) {
    let app = spawn_app_with(db, &[("REPORT_WAIT_SECONDS", "0.5")]).await;
    let (a, b, rid) = app.couple().await;
    let store = &app.state.store;

    let sid = app.start_session(&a, &rid).await;
    let id: Uuid = sid.parse().unwrap();
    store
        .open_socket(Uuid::now_v7(), id, uid(&a), Uuid::new_v4())
        .await
        .unwrap();
    app.finalize(&sid, Some(token(&a))).await;
    let report = app.wait_report(&sid, token(&a)).await;
    assert_eq!(report["complete"], false, "{report}");
    let reason = report["incomplete_reason"].as_str().unwrap();
    assert!(reason.contains("stopped reporting"), "{reason}");

    let sid = app.start_session(&a, &rid).await;
    let id: Uuid = sid.parse().unwrap();
    let socket = Uuid::now_v7();
    store
        .open_socket(socket, id, uid(&b), Uuid::new_v4())
        .await
        .unwrap();
    store
        .close_socket(
            socket,
            Counts {
                frames: 5,
                segments: 2,
            },
        )
        .await
        .unwrap();
    app.finalize(&sid, Some(token(&a))).await;
    let report = app.wait_report(&sid, token(&a)).await;
    assert_eq!(report["complete"], false, "{report}");
    assert_eq!(
        report["incomplete_reason"],
        "5 frame(s) and 2 audio segment(s) published were not recorded",
        "{report}"
    );
}

/// What a gateway published just before its socket stopped may reach a worker after the
/// session is finalizing: the worker still records it, and the report waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_record_frames_that_reach_the_bus_after_finalize() {
    let app = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let stop = CancellationToken::new();
    let w1 = start_worker(&app.env, 1, None, stop.clone()).await;
    let w2 = start_worker(&app.env, 1, None, stop.clone()).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let id: Uuid = sid.parse().unwrap();
    // a socket that published 20 frames, whose frames are still on their way
    let socket = Uuid::now_v7();
    let store = &app.state.store;
    store
        .open_socket(socket, id, uid(&a), Uuid::new_v4())
        .await
        .unwrap();
    store
        .close_socket(
            socket,
            Counts {
                frames: 20,
                segments: 0,
            },
        )
        .await
        .unwrap();
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202);
    let nc = async_nats::connect(NATS).await.unwrap();
    let subjects = inside_bus::Subjects::new(app.env["NATS_SUBJECT_PREFIX"].clone());
    let now = inside_schemas::server_now_ms();
    for seq in 0..20 {
        let frame = FeatureFrame {
            timestamp_ms: seq * 100,
            speaking_rate: 1.0,
            overlap_ratio: 0.0,
            seq: Some(seq),
            received_ms: Some(now - 1_000 + seq),
        };
        nc.publish(
            subjects.frames(id, uid(&a)),
            serde_json::to_vec(&frame).unwrap().into(),
        )
        .await
        .unwrap();
    }
    nc.flush().await.unwrap();
    let report = app.wait_report(&sid, token(&a)).await;
    assert_eq!(report["frames"], 20, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    stop.cancel();
    w1.stopped().await;
    w2.stopped().await;
}

/// On NATS, the audio segments a gateway published (speech and silence) are waited for like
/// frames: each leaves a mark when a worker with the model has handled it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_segments_published_before_finalize_are_waited_for_on_nats() {
    let app = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let stop = CancellationToken::new();
    let model = std::sync::Arc::new(common::audio::load_model());
    let w1 = start_worker(&app.env, 1, Some(model.clone()), stop.clone()).await;
    let w2 = start_worker(&app.env, 1, Some(model), stop.clone()).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    send_frames(&mut ws, 20).await;
    ws.send(
        "client.audio_start",
        json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}),
    )
    .await;
    let mut audio = common::audio::voice(0, 3.0);
    audio.extend(std::iter::repeat_n(0.0, 24_000));
    for chunk in common::audio::pcm(&audio).chunks(3200) {
        ws.send_binary(chunk).await;
    }
    // no audio_stop: finalize ends the stream, whose last segments and end are published
    // after the socket stopped reading (the pong only proves the chunks were read)
    pong(&mut ws).await;
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202);
    let report = app.wait_report(&sid, token(&a)).await;
    assert_eq!(report["complete"], true, "{report}");
    let id: Uuid = sid.parse().unwrap();
    let published = app.state.store.published_counts(id).await.unwrap();
    let recorded = app.state.store.recorded_counts(id).await.unwrap();
    let sent = published.per_member[&uid(&a)];
    assert_eq!(sent, recorded[&uid(&a)]);
    assert_eq!(sent.frames, 20);
    // 4.5 s in 1.5 s segments, then the stream's end (a segment with no samples)
    assert_eq!(sent.segments, 4, "{sent:?}");
    assert_eq!(report["frames"], 20);
    stop.cancel();
    w1.stopped().await;
    w2.stopped().await;
}

/// A TCP proxy in front of the test Redis that holds every reply for `delay`.
async fn slow_redis(delay: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect("127.0.0.1:6379")
                .await
                .unwrap();
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
            });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((due, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if to_client.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// With the limit on, a frame that may nudge asks Redis off the frame loop, so its nudge is
/// decided after the frame reached the worker. The frame is recorded only after its nudge,
/// so a report written the moment the frame is in still has the nudge: here the worker's
/// Redis answers 1 s late, and finalize comes right after the frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nudge_decided_after_its_frame_reached_the_worker_is_in_the_report() {
    let app = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let mut env = app.env.clone();
    let slow = slow_redis(Duration::from_secs(1)).await;
    env.insert("REDIS_URL".into(), format!("redis://{slow}"));
    let stop = CancellationToken::new();
    let worker = start_worker(&env, 1, None, stop.clone()).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    ws.frame(6.0, 1).await;
    pong(&mut ws).await;
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202);
    let report = app.wait_report(&sid, token(&a)).await;
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["frames"], 1, "{report}");
    assert_eq!(report["nudges"]["total"], 1, "{report}");
    stop.cancel();
    worker.stopped().await;
}
