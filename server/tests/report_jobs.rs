//! Report jobs that go wrong: a job that keeps failing leaves its session `failed` and
//! `GET …/report` answers 409 `report_failed` (database queue and JetStream), an operator's
//! `gateway report rerun <sid>` writes it once the cause is gone, and a job held by a process
//! that died is taken back within seconds of the next start instead of after its lease.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::worker::start_worker;
use common::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const NATS: &str = "nats://127.0.0.1:4222";

both_databases!(
    a_failing_report_job_fails_the_session_and_can_be_rerun,
    a_job_held_by_a_dead_runner_is_taken_back_at_start_up,
);

/// A stored event row no report can read: every attempt at the report fails on it.
async fn corrupt_events(app: &TestApp, sid: &str) {
    sqlx::query(
        "INSERT INTO session_events (session_id, user_id, kind, ts_ms, payload) \
         VALUES ($1, NULL, 'frame', 0, 'not json')",
    )
    .bind(sid)
    .execute(app.state.store.pool())
    .await
    .unwrap();
}

async fn repair_events(app: &TestApp, sid: &str) {
    sqlx::query("DELETE FROM session_events WHERE session_id = $1 AND payload = 'not json'")
        .bind(sid)
        .execute(app.state.store.pool())
        .await
        .unwrap();
}

/// Polls `GET …/report` until it is no longer 202.
async fn report_outcome(api: &Api, sid: &str, t: &str, within: Duration) -> (u16, Value) {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = api
            .get(&format!("/v1/sessions/{sid}/report"), Some(t))
            .await;
        if s != 202 {
            return (s, body);
        }
        assert!(Instant::now() < deadline, "still pending after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `gateway report rerun <sid>` as an operator runs it, with the deployment's settings.
fn rerun(env: &HashMap<String, String>, sid: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .current_dir(dir.path())
        .envs(env)
        .args(["report", "rerun", sid])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn fails_then_reruns(app: &TestApp, within: Duration) {
    let (a, _b, rid) = app.couple().await;
    let t = token(&a);
    let sid = app.start_session(&a, &rid).await;
    corrupt_events(app, &sid).await;
    let (s, _) = app.finalize(&sid, Some(t)).await;
    assert_eq!(s, 202);
    let (s, body) = report_outcome(app, &sid, t, within).await;
    assert_eq!(s, 409, "{body}");
    assert_error(&body, "report_failed");
    assert!(
        !body.to_string().contains("not json"),
        "no internal detail: {body}"
    );
    let (_, session) = app.get(&format!("/v1/sessions/{sid}"), Some(t)).await;
    assert_eq!(session["status"], "failed", "{session}");
    let why = app
        .state
        .store
        .session_failure(sid.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(why.contains("failed"), "{why}");

    // the cause is fixed; the operator re-runs the job
    repair_events(app, &sid).await;
    let said = rerun(&app.env, &sid);
    assert!(said.contains("enqueued"), "{said}");
    let report = app.wait_report(&sid, t).await;
    assert_eq!(report["session_id"], sid, "{report}");
    let (_, session) = app.get(&format!("/v1/sessions/{sid}"), Some(t)).await;
    assert_eq!(session["status"], "completed", "{session}");
}

async fn a_failing_report_job_fails_the_session_and_can_be_rerun(db: Db) {
    let app = spawn_app_with(db, &[("REPORT_JOB_RETRY_MS", "10")]).await;
    fails_then_reruns(&app, Duration::from_secs(10)).await;
    // documented
    let (_, doc) = app.get("/openapi.json", None).await;
    let responses = &doc["paths"]["/v1/sessions/{sid}/report"]["get"]["responses"];
    assert!(responses["409"].is_object(), "{responses}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_report_job_on_jetstream_fails_the_session_and_can_be_rerun() {
    let app = spawn_app_with(
        Db::Postgres,
        &[
            ("NATS_URL", NATS),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REPORT_JOB_RETRY_MS", "10"),
        ],
    )
    .await;
    let stop = CancellationToken::new();
    let worker = start_worker(&app.env, 1, None, stop.clone()).await;
    fails_then_reruns(&app, Duration::from_secs(20)).await;
    stop.cancel();
    worker.stopped().await;
}

/// The process died right after taking the job. Its lease would keep the job for 120 s; its
/// beat stopped, so the next start takes it within seconds. A job whose runner still beats is
/// left alone until it stops.
async fn a_job_held_by_a_dead_runner_is_taken_back_at_start_up(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let dead = app.start_session(&a, &rid).await;
    let alive = app.start_session(&a, &rid).await;
    let (env, dir) = app.stop().await;
    let store = inside_store::Store::connect(&env["DATABASE_URL"], 2, false)
        .await
        .unwrap();
    let now = inside_store::now_micros();
    for (sid, beat_at) in [(&dead, now - 60_000_000), (&alive, now)] {
        let id: Uuid = sid.parse().unwrap();
        store.begin_finalize(id).await.unwrap();
        store
            .enqueue_job(inside_store::jobs::REPORT, id)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = 1, locked_until = $1, \
             runner_id = $2, heartbeat_at = $3 WHERE session_id = $4",
        )
        .bind(now + 120_000_000)
        .bind(Uuid::new_v4().to_string())
        .bind(beat_at)
        .bind(sid.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    }
    store.close().await;

    let started = Instant::now();
    let app = start(env, dir).await;
    let report = app.wait_report(&dead, token(&a)).await;
    assert_eq!(report["session_id"], dead.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // the other job's runner beat a moment ago: not taken yet, then taken once its beat is stale
    let (s, _) = app
        .get(&format!("/v1/sessions/{alive}/report"), Some(token(&a)))
        .await;
    assert_eq!(s, 202);
    let (s, body) = report_outcome(&app, &alive, token(&a), Duration::from_secs(15)).await;
    assert_eq!(s, 200, "{body}");
}
