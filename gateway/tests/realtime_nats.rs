//! The distributed realtime path on real NATS, Redis and PostgreSQL: two
//! gateways, two workers (in-process here, each with its own NATS connection
//! and the shared Redis limiter), users of one session on different gateways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::ws::Ws;
use common::*;
use futures::StreamExt;
use inside_bus::{Bus, Subjects};
use inside_settings::{ExposeSecret, Settings};
use inside_store::limiter::Limiter;
use inside_store::Store;
use inside_workers::pipeline::jobs::run_report_jobs;
use inside_workers::pipeline::{Pipeline, PipelineConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(5);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

fn uid(pair: &Value) -> &str {
    pair["user"]["id"].as_str().unwrap()
}

/// One worker: the pipeline and the JetStream report jobs.
async fn start_worker(
    env: &std::collections::HashMap<String, String>,
    stop: CancellationToken,
) -> Pipeline {
    let settings = Settings::from_map(env).unwrap();
    let subjects = Subjects::new(settings.nats_subject_prefix.clone());
    let bus = Bus::connect_nats(NATS, "test-worker", subjects.clone())
        .await
        .unwrap();
    let store = Store::connect(settings.database_url.expose_secret(), 3, false)
        .await
        .unwrap();
    let limiter = Limiter::redis(REDIS, &settings.nats_subject_prefix)
        .await
        .unwrap();
    tokio::spawn(run_report_jobs(
        bus.nats().unwrap().clone(),
        subjects,
        store.clone(),
        stop.clone(),
    ));
    Pipeline::start(
        bus,
        limiter,
        store,
        PipelineConfig::from_settings(&settings, 2),
        stop,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_two_workers_on_nats() {
    let g1 = spawn_app_with(
        Db::Postgres,
        &[
            ("NATS_URL", NATS),
            ("REDIS_URL", REDIS),
            ("NUDGE_RATE_LIMIT_SECONDS", "30"),
        ],
    )
    .await;
    let g2 = g1.another_gateway().await;
    let stop = CancellationToken::new();
    let w1 = start_worker(&g1.env, stop.clone()).await;
    let w2 = start_worker(&g1.env, stop.clone()).await;

    let (a, b, rid) = g1.couple().await;
    let (s, body) = g1
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let sid = body["id"].as_str().unwrap().to_string();

    // A researcher's tap on the session's frames.
    let prefix = g1.env["NATS_SUBJECT_PREFIX"].clone();
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
    let frame: Value = serde_json::from_slice(&tapped.payload).unwrap();
    assert_eq!(frame["seq"], 1);

    // Ten over-threshold frames of b across both gateways, one window: one nudge.
    let mut wb1 = Ws::connect(g1.addr, &sid, token(&b)).await;
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
    let (s, _) = g2
        .post(
            &format!("/v1/sessions/{sid}/finalize"),
            Some(token(&b)),
            json!({}),
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(wa.close_code(T).await, Some(4409));
    assert_eq!(wb.close_code(T).await, Some(4409));
    let mut report = Value::Null;
    for _ in 0..100 {
        let (s, body) = g1
            .get(&format!("/v1/sessions/{sid}/report"), Some(token(&a)))
            .await;
        if s == 200 {
            report = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(report["frames"].as_u64().unwrap() >= 11, "{report}");
    assert_eq!(report["nudges"]["total"], 2, "{report}");
    // A second publish of the same job is deduplicated by Nats-Msg-Id.
    let subjects = Subjects::new(prefix.clone());
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

    stop.cancel();
    w1.stopped().await;
    w2.stopped().await;
    js.delete_stream(subjects.jobs_stream()).await.ok();
}
