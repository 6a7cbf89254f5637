//! One time base for a session's report, the server's clock: frames are placed by when the
//! gateway received them and speaker segments by when their audio stream started on the
//! gateway, whatever the phone's `timestamp_ms` says (epoch ms, or the ends of i64), and a
//! phone cannot set the server's stamp itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::audio::{model_dir, pcm, voice, wav};
use common::ws::Ws;
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

both_databases!(phone_timestamps_at_the_ends_of_i64_give_a_sane_report);

fn uid(pair: &Value) -> uuid::Uuid {
    pair["user"]["id"].as_str().unwrap().parse().unwrap()
}

async fn frame(ws: &mut Ws, timestamp_ms: i64, seq: i64) {
    ws.send(
        "client.feature_frame",
        json!({"timestamp_ms": timestamp_ms, "speaking_rate": 2.0, "overlap_ratio": 0.0, "seq": seq}),
    )
    .await;
}

async fn pong(ws: &mut Ws) {
    ws.send("client.ping", json!({})).await;
    ws.expect("server.pong", T).await;
}

/// Frames with the phone's epoch clock and 3 s of audio from the same phone: the duration is
/// the seconds the session took on the server, not the gap between the phone's epoch and the
/// stream's zero (≈ 1.7 billion seconds before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_audio_share_the_server_clock() {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("ECAPA_MODEL_DIR", model_dir().as_str()),
            ("SPEAKER_MATCH_THRESHOLD", "-1"),
        ],
    )
    .await;
    let (a, _b, rid) = app.couple().await;
    let res = app.put_voiceprint(&a, wav(&voice(0, 4.0))).await;
    assert_eq!(res.status(), 200);
    let started = Instant::now();
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    for i in 0..10 {
        frame(&mut ws, 1_700_000_000_000 + i * 100, i).await;
    }
    ws.send(
        "client.audio_start",
        json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}),
    )
    .await;
    // 3 s of voice, then 1.5 s of silence: a segment nobody is heard in
    let mut audio = voice(0, 3.0);
    audio.extend(std::iter::repeat_n(0.0, 24_000));
    for chunk in pcm(&audio).chunks(3200) {
        ws.send_binary(chunk).await;
    }
    ws.send("client.audio_stop", json!({})).await;
    for i in 10..20 {
        frame(&mut ws, 1_700_000_000_000 + i * 100, i).await;
    }
    pong(&mut ws).await;
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202);
    let report = app.wait_report(&sid, token(&a)).await;
    let took = started.elapsed().as_secs_f64();
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["frames"], 20, "{report}");
    let duration = report["duration_s"].as_f64().unwrap();
    // the audio's segments count from their stream's start on the server: 3 s of audio sent
    // faster than real time still ends 3 s after it started, whatever the phone's epoch
    assert!(duration >= 2.9, "{report}");
    assert!(
        duration <= took + 5.0,
        "{duration} s reported, {took} s elapsed: {report}"
    );
    // talk time from the two attributed segments; the silent one was received all the same
    assert_eq!(report["speakers"][0]["talk_time_s"], 3.0, "{report}");
    let recorded = app
        .state
        .store
        .recorded_counts(sid.parse().unwrap())
        .await
        .unwrap();
    // and the stream's end, a segment with no samples
    assert_eq!(recorded[&uid(&a)].segments, 4, "{recorded:?}");
}

async fn phone_timestamps_at_the_ends_of_i64_give_a_sane_report(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let started = Instant::now();
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    let stamps = [i64::MIN, i64::MAX, 0, -1, i64::MIN + 1, i64::MAX - 1];
    for (i, ts) in stamps.iter().enumerate() {
        frame(&mut ws, *ts, i as i64).await;
    }
    pong(&mut ws).await;
    app.finalize(&sid, Some(token(&a))).await;
    let report = app.wait_report(&sid, token(&a)).await;
    let took = started.elapsed().as_secs_f64();
    assert_eq!(report["frames"], 6, "{report}");
    let duration = report["duration_s"].as_f64().unwrap();
    assert!((0.0..=took).contains(&duration), "{report}");
    let talk = report["speakers"][0]["talk_time_s"].as_f64().unwrap();
    // every gap saturates to the longest a frame may stand for (5 s)
    assert_eq!(talk, 30.0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_cannot_set_the_servers_receive_time() {
    let app = spawn_app(Db::Sqlite).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    for stamp in [json!(0), Value::Null] {
        ws.send(
            "client.feature_frame",
            json!({"timestamp_ms": 1, "speaking_rate": 2.0, "overlap_ratio": 0.0, "received_ms": stamp}),
        )
        .await;
        let err = ws.expect("server.error", T).await;
        assert_eq!(err["payload"]["code"], "invalid_frame", "{err}");
    }
    frame(&mut ws, 1, 1).await;
    pong(&mut ws).await;
    app.finalize(&sid, Some(token(&a))).await;
    let report = app.wait_report(&sid, token(&a)).await;
    assert_eq!(report["frames"], 1, "{report}");
}
