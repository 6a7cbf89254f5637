//! Nudges and report figures from audio alone (issue 20), end to end through the WebSocket:
//! phones that send no feature frames stream the committed espeak-ng dialogues
//! (`engine/tests/fixtures/dialogues/`, scripted rates, overlaps and interruptions in
//! `*.truth.json`), and the workers' derived features nudge them and fill the report's
//! `speakers[].from_audio`. Embedded, and on NATS + Redis + PostgreSQL with one worker, and
//! with two (each session's audio then goes to one of them: `pipeline/affinity.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::audio::{fixture, load_model, model_dir, pcm};
use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use futures::StreamExt;
use inside_engine::speech::decode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

fn dialogue(name: &str, side: &str) -> Vec<f32> {
    let flac = std::fs::read(fixture(&format!("dialogues/{name}.{side}.flac"))).unwrap();
    decode(flac, None, &Default::default()).unwrap().samples
}

fn truth(name: &str) -> Value {
    let path = fixture(&format!("dialogues/{name}.truth.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn uid(pair: &Value) -> String {
    pair["user"]["id"].as_str().unwrap().to_string()
}

async fn audio_start(ws: &mut Ws) {
    ws.send(
        "client.audio_start",
        json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}),
    )
    .await;
}

/// Streams `sides` (one phone each) together: both streams start at once and go out in
/// interleaved 100 ms chunks, as two phones on the table would (faster than real time).
async fn stream_together(sides: &mut [(&mut Ws, Vec<f32>)]) {
    for (ws, _) in sides.iter_mut() {
        audio_start(ws).await;
    }
    let chunks: Vec<Vec<Vec<u8>>> = sides
        .iter()
        .map(|(_, s)| pcm(s).chunks(3200).map(<[u8]>::to_vec).collect())
        .collect();
    let longest = chunks.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for (k, (ws, _)) in sides.iter_mut().enumerate() {
            if let Some(c) = chunks[k].get(i) {
                ws.send_binary(c).await;
            }
        }
    }
    for (ws, _) in sides.iter_mut() {
        ws.send("client.audio_stop", json!({})).await;
    }
}

/// The first `server.nudge` of `kind`; panics on another type first.
async fn first_nudge(ws: &mut Ws) -> Value {
    ws.expect("server.nudge", T).await["payload"].clone()
}

/// A phone streaming the fast monologue side (every utterance over 3 syllables/s) gets
/// `SLOW_DOWN`, and the nudge names no frame (there was none).
async fn slow_down_from_audio_alone(app: &TestApp) {
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    stream_together(&mut [(&mut ws, dialogue("monologue", "a"))]).await;
    let nudge = first_nudge(&mut ws).await;
    println!("audio-only phone: {nudge}");
    assert_eq!(nudge["nudge_type"], "SLOW_DOWN", "{nudge}");
    assert_eq!(nudge["frame_seq"], Value::Null, "{nudge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_only_phone_is_told_to_slow_down_embedded() {
    let app = spawn_app_with(Db::Sqlite, &[("ECAPA_MODEL_DIR", model_dir().as_str())]).await;
    slow_down_from_audio_alone(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_only_phone_is_told_to_slow_down_on_nats() {
    // the gateway has no model: the worker analyses the audio and publishes what it derives
    let app = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let stop = CancellationToken::new();
    let worker = start_worker(
        &app.env,
        1,
        Some(std::sync::Arc::new(load_model())),
        stop.clone(),
    )
    .await;
    let prefix = app.env["NATS_SUBJECT_PREFIX"].clone();
    let tap = async_nats::connect(NATS).await.unwrap();
    let mut derived = tap
        .subscribe(format!("{prefix}.v1.derived.>"))
        .await
        .unwrap();
    tap.flush().await.unwrap();

    slow_down_from_audio_alone(&app).await;
    // the features travel on their own subject, one frame per 250 ms hop
    let msg = tokio::time::timeout(T, derived.next())
        .await
        .unwrap()
        .unwrap();
    let frame: inside_schemas::DerivedFrame = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(frame.hop_ms, 250, "{frame:?}");
    stop.cancel();
    worker.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_features_off_gives_no_derived_nudges() {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("ECAPA_MODEL_DIR", model_dir().as_str()),
            ("DERIVED_FEATURES", "off"),
        ],
    )
    .await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    let audio = dialogue("monologue", "a");
    let segments = audio.len().div_ceil(24_000);
    stream_together(&mut [(&mut ws, audio)]).await;
    // every segment handled (a speaker event for each one with speech), then 3 s of quiet
    let mut nudges = Vec::new();
    let mut speakers = 0;
    while let Some(m) = ws.next_json(Duration::from_secs(3)).await {
        match m["type"].as_str() {
            Some("server.speaker") => speakers += 1,
            Some("server.nudge") => nudges.push(m),
            _ => {}
        }
    }
    println!(
        "DERIVED_FEATURES=off: {speakers} speaker events of {segments} segments, {} nudges",
        nudges.len()
    );
    assert!(speakers >= segments / 2, "{speakers} of {segments}");
    assert!(nudges.is_empty(), "{nudges:?}");
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert!(s == 200 || s == 202, "finalize: {s}");
    let report = app.wait_report(&sid, token(&a)).await;
    for s in report["speakers"].as_array().unwrap() {
        assert_eq!(s["from_audio"], Value::Null, "{report}");
    }
}

/// The scripted utterances of `side`.
fn utterances<'a>(truth: &'a Value, side: &str) -> Vec<&'a Value> {
    truth["utterances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["member"] == side)
        .collect()
}

fn span_ms(utterance: &Value) -> i64 {
    utterance["end_ms"].as_i64().unwrap() - utterance["start_ms"].as_i64().unwrap()
}

/// The report's `from_audio` of `pair`'s user.
fn from_audio(report: &Value, pair: &Value) -> Value {
    report["speakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user_id"] == uid(pair).as_str())
        .unwrap()["from_audio"]
        .clone()
}

/// Runs of `who`'s speech in the script with pauses under `bridge` ms bridged.
fn runs(truth: &Value, who: &str, bridge: i64) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = utterances(truth, who)
        .into_iter()
        .map(|u| {
            (
                u["start_ms"].as_i64().unwrap(),
                u["end_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    spans.sort();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s - last.1 < bridge => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Every scripted utterance is over 3 syllables/s: with the default threshold SLOW_DOWN would
/// take the shared nudge window first; the two-phone tests are about overlap.
const NO_SLOW_DOWN: (&str, &str) = ("SPEAKING_RATE_THRESHOLD", "20");

/// The embedded default with the speaker model.
async fn embedded_with_model() -> TestApp {
    spawn_app_with(
        Db::Sqlite,
        &[("ECAPA_MODEL_DIR", model_dir().as_str()), NO_SLOW_DOWN],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phones_get_let_partner_finish_on_overlap_and_a_report_from_audio() {
    let_partner_finish_from_two_phones(&embedded_with_model().await).await;
}

/// Two workers share the queue group, so the two phones' segments are spread over them; the
/// overlap between the phones is only seen whole because each session's audio goes to one
/// worker (its owner in Redis), which the other forwards its share to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phones_get_let_partner_finish_with_two_workers_on_nats() {
    let fleet = TwoWorkers::start().await;
    let_partner_finish_from_two_phones(&fleet.app).await;
    fleet.stop().await;
}

/// NATS + Redis + PostgreSQL, and two workers with the speaker model in the queue group.
struct TwoWorkers {
    app: TestApp,
    stop: CancellationToken,
    workers: [inside_workers::pipeline::Pipeline; 2],
}

impl TwoWorkers {
    async fn start() -> Self {
        let app = spawn_app_with(
            Db::Postgres,
            &[("NATS_URL", NATS), ("REDIS_URL", REDIS), NO_SLOW_DOWN],
        )
        .await;
        let model = std::sync::Arc::new(load_model());
        let stop = CancellationToken::new();
        let first = start_worker(&app.env, 1, Some(model.clone()), stop.clone()).await;
        let second = start_worker(&app.env, 1, Some(model), stop.clone()).await;
        Self {
            app,
            stop,
            workers: [first, second],
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        for w in self.workers {
            w.stopped().await;
        }
    }
}

/// Both phones of a couple stream their side of `turns` together: both get
/// `LET_PARTNER_FINISH` at the scripted overlap, and the report's `from_audio` matches the
/// script.
async fn let_partner_finish_from_two_phones(app: &TestApp) {
    let (a, b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws_a = Ws::connect(app.addr, &sid, token(&a)).await;
    let mut ws_b = Ws::connect(app.addr, &sid, token(&b)).await;
    ws_b.expect_participants(&[&uid(&a), &uid(&b)], T).await;
    stream_together(&mut [
        (&mut ws_a, dialogue("turns", "a")),
        (&mut ws_b, dialogue("turns", "b")),
    ])
    .await;
    // B talks over A at 10.0–11.2 s (1.18 s of the last 3 s > 0.3): both are told
    for ws in [&mut ws_a, &mut ws_b] {
        let nudge = first_nudge(ws).await;
        println!("overlap: {nudge}");
        assert_eq!(nudge["nudge_type"], "LET_PARTNER_FINISH", "{nudge}");
    }

    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert!(s == 200 || s == 202, "finalize: {s}");
    let report = app.wait_report(&sid, token(&a)).await;
    let truth = truth("turns");
    let overlaps: Vec<(i64, i64)> = truth["overlaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["start_ms"].as_i64().unwrap(),
                o["end_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    for (side, pair) in [("a", &a), ("b", &b)] {
        let stats = from_audio(&report, pair);
        let utterances = utterances(&truth, side);
        let speaking_ms: i64 = utterances.iter().map(|u| span_ms(u)).sum();
        let syllables: i64 = utterances
            .iter()
            .map(|u| u["syllables"].as_i64().unwrap())
            .sum();
        let overlapped_ms: i64 = overlaps.iter().map(|(s, e)| e - s).sum();
        let want_rate = syllables as f64 / (speaking_ms as f64 / 1000.0);
        let want_share = overlapped_ms as f64 / speaking_ms as f64;
        let want_turns = runs(&truth, side, 1000)
            .iter()
            .filter(|(s, e)| e - s >= 500)
            .count() as u64;
        let interruptions = |role: &str| {
            truth["interruptions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i[role] == side)
                .count() as u64
        };
        println!(
            "member {side}: from_audio {stats}; script: speaking {:.2} s, {want_rate:.2} syll/s, \
             overlap share {want_share:.3}, {want_turns} turns, {} interruptions, {} interrupted",
            speaking_ms as f64 / 1000.0,
            interruptions("interrupter"),
            interruptions("interrupted"),
        );
        let got = |k: &str| stats[k].as_f64().unwrap();
        // speech time: within 10 % (VAD hangover and espeak's own pauses inside utterances)
        let want_s = speaking_ms as f64 / 1000.0;
        assert!(
            (got("speaking_s") - want_s).abs() <= 0.10 * want_s,
            "{side}: {stats}"
        );
        // rate: within 20 % of the script's syllables over its utterance time (the live
        // estimate is over speech only, the script's over whole utterances)
        assert!(
            (got("speaking_rate") - want_rate).abs() <= 0.20 * want_rate,
            "{side}: {stats}"
        );
        // overlap share: within 0.05
        assert!(
            (got("overlap_share") - want_share).abs() <= 0.05,
            "{side}: {stats}"
        );
        assert_eq!(stats["turns"].as_u64(), Some(want_turns), "{side}: {stats}");
        assert_eq!(
            stats["interruptions"].as_u64(),
            Some(interruptions("interrupter")),
            "{side}: {stats}"
        );
        assert_eq!(
            stats["interrupted"].as_u64(),
            Some(interruptions("interrupted")),
            "{side}: {stats}"
        );
        assert_eq!(stats["monologues"].as_u64(), Some(0), "{side}: {stats}");
    }
}

/// A's phone streams the whole `turns` side, whose last words (16.5–18.5 s) come after B's
/// phone stopped at 2 s, and the report is asked for as soon as the gateway has read the
/// streams: the hops that waited for B's audio come out on B's stream end, not 4 s later, so
/// the report has all of A's speech.
async fn the_last_speakers_tail_reaches_a_report_asked_for_at_once(app: &TestApp) {
    let (a, b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws_a = Ws::connect(app.addr, &sid, token(&a)).await;
    let mut ws_b = Ws::connect(app.addr, &sid, token(&b)).await;
    ws_b.expect_participants(&[&uid(&a), &uid(&b)], T).await;
    let mut short = dialogue("turns", "b");
    short.truncate(32_000);
    stream_together(&mut [(&mut ws_a, dialogue("turns", "a")), (&mut ws_b, short)]).await;
    // a pong: the gateway has read every chunk sent before it (what it had not read when the
    // finalize reached it would not be in the report)
    for ws in [&mut ws_a, &mut ws_b] {
        ws.send("client.ping", json!({})).await;
        ws.expect("server.pong", T).await;
    }
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert!(s == 200 || s == 202, "finalize: {s}");
    let report = app.wait_report(&sid, token(&a)).await;
    let want_ms: i64 = utterances(&truth("turns"), "a")
        .iter()
        .map(|u| span_ms(u))
        .sum();
    let stats = from_audio(&report, &a);
    let want_s = want_ms as f64 / 1000.0;
    println!(
        "A: from_audio {stats}; script {want_s:.2} s; complete: {}",
        report["complete"]
    );
    assert_eq!(report["complete"], true, "{report}");
    let got = stats["speaking_s"].as_f64().unwrap();
    assert!((got - want_s).abs() <= 0.10 * want_s, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_speakers_tail_reaches_a_report_asked_for_at_once_embedded() {
    the_last_speakers_tail_reaches_a_report_asked_for_at_once(&embedded_with_model().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_speakers_tail_reaches_a_report_asked_for_at_once_with_two_workers() {
    let fleet = TwoWorkers::start().await;
    the_last_speakers_tail_reaches_a_report_asked_for_at_once(&fleet.app).await;
    fleet.stop().await;
}
