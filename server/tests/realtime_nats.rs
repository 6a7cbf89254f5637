//! The distributed realtime path on real NATS, Redis and PostgreSQL: two
//! gateways (in this process, then as two `gateway` processes), two workers (in-process
//! here, each with its own NATS connection and the shared Redis limiter), users of one
//! session on different gateways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::audio::{load_model, pcm, voice, wav};
use common::process::GatewayProcess;
use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use futures::StreamExt;
use inside_bus::{Bus, Subjects};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(5);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

/// A session whose members are on gateways `g1` and `g2` (both on `env`), two workers in the
/// queue group, Redis for the nudge limit (30 s): presence, nudges to the right phone only, one
/// nudge per window across gateways, the frames tap, a poke across gateways, finalize and the
/// JetStream report.
async fn one_session_across_two_gateways(
    g1: &Api,
    g2: &Api,
    env: &std::collections::HashMap<String, String>,
    (a, b, rid): (Value, Value, String),
    sid: String,
) {
    let stop = CancellationToken::new();
    let w1 = start_worker(env, 2, None, stop.clone()).await;
    let w2 = start_worker(env, 2, None, stop.clone()).await;
    let prefix = &env["NATS_SUBJECT_PREFIX"];
    // An internal observer of the session's frames (researchers read `v1.research.>`).
    let tap_client = async_nats::connect(NATS).await.unwrap();
    let mut tap = tap_client
        .subscribe(format!("{prefix}.v1.frames.{sid}.>"))
        .await
        .unwrap();
    tap_client.flush().await.unwrap();

    // a on gateway 1, b on gateway 2: both see both.
    let mut wa = Ws::connect(g1.addr, &sid, token(&a)).await;
    let mut wb = Ws::connect(g2.addr, &sid, token(&b)).await;
    wa.expect_participants(&[uid(&a), uid(&b)], T).await;
    wb.expect_participants(&[uid(&a), uid(&b)], T).await;

    // An over-threshold frame on gateway 1 nudges a only.
    wa.frame(6.0, 1).await;
    let nudge = wa.expect("server.nudge", T).await;
    assert_eq!(nudge["payload"]["frame_seq"], 1, "{nudge}");
    assert!(wb
        .collect("server.nudge", Duration::from_millis(300))
        .await
        .is_empty());
    let tapped = tokio::time::timeout(T, tap.next()).await.unwrap().unwrap();
    assert!(tapped.subject.as_str().ends_with(uid(&a)));
    // the events stream judged that nudge's window; a worker asking Redis sees it taken too
    let key = format!("{prefix}:nudge:{sid}:{}", uid(&a));
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        if ttl_ms > 0 {
            assert!(ttl_ms <= 30_000, "{ttl_ms}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{key} never set");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frame: Value = serde_json::from_slice(&tapped.payload).unwrap();
    assert_eq!(frame["seq"], 1);

    // Ten over-threshold frames of b across both gateways, one window: one nudge.
    let mut wb1 = Ws::connect(g1.addr, &sid, token(&b)).await;
    // its join (and gateway 1's subscription to b's nudges) is done once it sees the state
    wb1.expect_participants(&[uid(&a), uid(&b)], T).await;
    for i in 0..5 {
        wb.frame(6.0, 100 + i).await;
        wb1.frame(6.0, 200 + i).await;
    }
    let on_g2 = wb
        .collect("server.nudge", Duration::from_millis(1500))
        .await;
    let on_g1 = wb1
        .collect("server.nudge", Duration::from_millis(100))
        .await;
    assert_eq!(on_g2.len(), 1, "{on_g2:?}");
    assert_eq!(on_g1.len(), 1, "{on_g1:?}");
    assert_eq!(on_g1[0]["payload"], on_g2[0]["payload"]);
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let m = tokio::time::timeout(T, tap.next()).await.unwrap().unwrap();
        seen.insert(m.subject.to_string());
    }
    assert_eq!(seen.len(), 1, "b's frames on b's subject");

    // A poke sent through gateway 1 arrives on gateway 2.
    let (s, poke) = g1
        .post(
            "/v1/pokes",
            Some(token(&a)),
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(s, 201, "{poke}");
    assert_eq!(
        wb.expect("server.poke", T).await["payload"]["id"],
        poke["id"]
    );

    // Finalize on gateway 2: sockets on both close 4409; the JetStream job
    // writes the report once.
    let (s, _) = g2.finalize(&sid, Some(token(&b))).await;
    assert_eq!(s, 202);
    assert_eq!(wa.close_code(T).await, Some(4409));
    assert_eq!(wb.close_code(T).await, Some(4409));
    let report = g1.wait_report(&sid, token(&a)).await;
    assert!(report["frames"].as_u64().unwrap() >= 11, "{report}");
    assert_eq!(report["nudges"]["total"], 2, "{report}");
    // A second publish of the same job is deduplicated by Nats-Msg-Id.
    let subjects = Subjects::new(prefix.to_string());
    inside_bus::jobs::publish_report_job(&tap_client, &subjects, sid.parse().unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(tap_client.clone());
    let mut stream = js.get_stream(subjects.jobs_stream()).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 0,
        "the job was acked and the duplicate dropped"
    );
    js.delete_stream(subjects.jobs_stream()).await.ok();
    stop.cancel();
    w1.stopped().await;
    w2.stopped().await;
}

const DISTRIBUTED: [(&str, &str); 3] = [
    ("NATS_URL", NATS),
    ("REDIS_URL", REDIS),
    ("NUDGE_RATE_LIMIT_SECONDS", "30"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_two_workers_on_nats() {
    let g1 = spawn_app_with(Db::Postgres, &DISTRIBUTED).await;
    let g2 = g1.another_gateway().await;
    let couple = g1.couple().await;
    let sid = g1.start_session(&couple.0, &couple.2).await;
    one_session_across_two_gateways(&g1, &g2, &g1.env, couple, sid).await;
}

/// The same with each gateway a `gateway` process of its own (the worker fleet as processes,
/// killed mid-stream, is `workers/tests/fleet.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_two_workers_on_nats() {
    // an in-process gateway prepares the database, the users and the session, then stops
    let setup = spawn_app_with(Db::Postgres, &DISTRIBUTED).await;
    let couple = setup.couple().await;
    let sid = setup.start_session(&couple.0, &couple.2).await;
    let (env, _data) = setup.stop().await;
    let g1 = GatewayProcess::start(&env).await;
    let g2 = GatewayProcess::start(&env).await;
    one_session_across_two_gateways(&g1, &g2, &env, couple, sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_on_nats_enrol_through_workers_and_reach_the_phone() {
    // The gateway has no model: enrolment and attribution happen on the worker.
    let g = spawn_app_with(
        Db::Postgres,
        &[
            ("NATS_URL", NATS),
            ("REDIS_URL", REDIS),
            ("SPEAKER_MATCH_THRESHOLD", "-1"),
        ],
    )
    .await;
    let (a, b, rid) = g.couple().await;

    // No worker with a model yet: nobody answers the request.
    let res = g.put_voiceprint(&a, wav(&voice(0, 4.0))).await;
    assert_eq!(res.status(), 503);
    assert_error(&res.json().await.unwrap(), "model_unavailable");

    let stop = CancellationToken::new();
    let model = std::sync::Arc::new(load_model());
    let w = start_worker(&g.env, 2, Some(model.clone()), stop.clone()).await;

    // Enrolment through inside.v1.embed: the worker's refusal keeps its status.
    let res = g.put_voiceprint(&a, vec![0x42; 3000]).await;
    assert_eq!(res.status(), 422);
    let res = g.put_voiceprint(&a, wav(&voice(0, 4.0))).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enrolled"], true);
    assert!(
        (body["seconds"].as_f64().unwrap() - 4.0).abs() < 0.05,
        "{body}"
    );
    // 40 s is 1.3 MB of WAV, over nats-server's 1 MB max_payload: it travels through the
    // uploads bucket, which the worker empties.
    let res = g.put_voiceprint(&b, wav(&voice(1, 40.0))).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        (body["seconds"].as_f64().unwrap() - 40.0).abs() < 0.05,
        "{body}"
    );
    let subjects = Subjects::new(g.env["NATS_SUBJECT_PREFIX"].clone());
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let uploads = js
        .get_object_store(subjects.uploads_bucket())
        .await
        .unwrap();
    let left: Vec<_> = uploads.list().await.unwrap().collect().await;
    assert!(left.is_empty(), "uploads left behind: {}", left.len());

    // Both agree to research use, so researchers get copies of the session's data.
    for u in [&a, &b] {
        g.set_research(&rid, u, "granted").await;
    }
    let sid = g.start_session(&a, &rid).await;
    // A researcher listens to the session's audio segments and speaker events.
    let prefix = g.env["NATS_SUBJECT_PREFIX"].clone();
    let researcher = async_nats::connect(NATS).await.unwrap();
    let mut audio_tap = researcher
        .subscribe(format!("{prefix}.v1.research.audio.{sid}.>"))
        .await
        .unwrap();
    let mut speaker_tap = researcher
        .subscribe(format!("{prefix}.v1.research.speakers.{sid}"))
        .await
        .unwrap();
    researcher.flush().await.unwrap();

    // `worker tap --session` sees the same things as JSON lines.
    let tap_bus = Bus::connect_nats(NATS, "test-tap", Subjects::new(prefix.clone()))
        .await
        .unwrap();
    let tap = inside_workers::tap::subscribe(&tap_bus, sid.parse().unwrap())
        .await
        .unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let tapping = tokio::spawn(tap.run(stop.clone(), Duration::from_millis(200), move |l| {
        let _ = lines_tx.send(l);
    }));

    let mut wa = Ws::connect(g.addr, &sid, token(&a)).await;
    let mut wb = Ws::connect(g.addr, &sid, token(&b)).await;
    wb.expect_participants(&[uid(&a), uid(&b)], T).await;
    wa.frame(1.0, 7).await;
    wa.send(
        "client.audio_start",
        json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}),
    )
    .await;
    for chunk in pcm(&voice(0, 3.0)).chunks(3200) {
        wa.send_binary(chunk).await;
    }
    wa.send("client.audio_stop", json!({})).await;

    let segment = tokio::time::timeout(T, audio_tap.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        segment.subject.as_str().ends_with(uid(&a)),
        "{}",
        segment.subject
    );
    let headers = segment
        .headers
        .clone()
        .expect("audio segments carry headers");
    assert_eq!(headers.get("Inside-Seq").map(|v| v.as_str()), Some("0"));
    assert_eq!(
        headers.get("Inside-Start-Ms").map(|v| v.as_str()),
        Some("0")
    );
    assert_eq!(
        headers.get("Inside-End-Ms").map(|v| v.as_str()),
        Some("1500")
    );
    assert_eq!(
        segment.payload.len(),
        1500 * 16 * 4,
        "1.5 s of f32le at 16 kHz"
    );

    // Both phones of the session hear who spoke, attributed to a's voiceprint.
    for ws in [&mut wa, &mut wb] {
        let ev = ws.expect("server.speaker", Duration::from_secs(20)).await;
        assert_eq!(ev["payload"]["user_id"], uid(&a), "{ev}");
        assert_eq!(ev["payload"]["start_ms"], 0, "{ev}");
    }
    let tapped = tokio::time::timeout(T, speaker_tap.next())
        .await
        .unwrap()
        .unwrap();
    let tapped: Value = serde_json::from_slice(&tapped.payload).unwrap();
    assert_eq!(tapped["user_id"], uid(&a), "{tapped}");

    let mut kinds = std::collections::HashMap::<String, Value>::new();
    while !["frame", "audio", "speaker"]
        .iter()
        .all(|k| kinds.contains_key(*k))
    {
        let line = tokio::time::timeout(T, lines.recv())
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        kinds
            .entry(v["kind"].as_str().unwrap().to_string())
            .or_insert(v);
    }
    assert_eq!(kinds["frame"]["user_id"], uid(&a));
    assert_eq!(kinds["frame"]["payload"]["seq"], 7);
    assert_eq!(kinds["audio"]["payload"]["bytes"], 96_000);
    assert_eq!(kinds["audio"]["payload"]["end_ms"], 1500);
    assert_eq!(kinds["speaker"]["user_id"], uid(&a));

    // the finalize ends the tap, its `finalized` line last
    let (s, _) = g.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202);
    let end = tokio::time::timeout(T, tapping).await.unwrap().unwrap();
    assert_eq!(end, inside_workers::tap::TapEnd::Finalized);
    let mut last = Value::Null;
    while let Ok(line) = lines.try_recv() {
        last = serde_json::from_str(&line).unwrap();
    }
    assert_eq!(last["kind"], "finalized", "{last}");

    stop.cancel();
    w.stopped().await;
    js.delete_object_store(subjects.uploads_bucket()).await.ok();
}
