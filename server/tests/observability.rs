//! What ops read from a `gateway`: `/metrics` explains every series (`# HELP`), says which
//! build runs, carries process metrics, the frame→nudge latency as a histogram and the embedded
//! worker's series from zero; `LOG_FORMAT=json` writes one JSON object per line, with no
//! colour codes and no email address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ws::Ws;
use common::*;
use inside_testkit::prometheus::{assert_build_info, assert_every_series_described, sample};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn metrics_explain_every_series_and_time_frames_to_nudges() {
    let app = spawn_app(Db::Sqlite).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    ws.frame(6.0, 1).await;
    ws.expect("server.nudge", T).await;

    let scrape = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_every_series_described(&scrape);
    assert_build_info(&scrape, env!("CARGO_PKG_VERSION"));
    assert!(
        scrape.contains("# TYPE inside_frame_to_nudge_seconds histogram"),
        "{scrape}"
    );
    // the nudge above was timed, into the explicit buckets (100 µs … 1 s)
    assert_eq!(
        sample(&scrape, "inside_frame_to_nudge_seconds_bucket{le=\"+Inf\"}"),
        Some(1.0),
        "{scrape}"
    );
    assert!(
        scrape.contains("inside_frame_to_nudge_seconds_bucket{le=\"0.0001\"}"),
        "{scrape}"
    );
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("process_resident_memory_bytes ")),
        "{scrape}"
    );
    // the embedded worker side: its series exist before anything happened to them
    assert_eq!(
        sample(&scrape, "inside_jobs_total{outcome=\"failed\"}"),
        Some(0.0),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "inside_reports_failed_total"),
        Some(0.0),
        "{scrape}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_without_colour_or_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/inside.db", dir.path().display()),
        )
        .env("DATA_DIR", dir.path())
        .env("BIND_ADDR", addr.to_string())
        .env("SECRET_KEY", "test-secret-key-0123456789abcdef0123")
        .env("BCRYPT_COST", "4")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway binary starts");
    // a failing assertion must not leave the server behind
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
    let guard = KillOnDrop(child.id());
    let api = Api::new(addr);
    let deadline = Instant::now() + T;
    let healthy = || async {
        let res = api.http.get(api.url("/health")).send().await;
        matches!(res, Ok(r) if r.status() == 200)
    };
    while !healthy().await {
        assert!(Instant::now() < deadline, "gateway not healthy in {T:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let email = unique_email("logged");
    let (status, body) = api
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": "correct horse", "name": "Ada"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // SIGTERM: the graceful stop logs too
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success());
    // it has exited: its id is no longer ours to signal
    std::mem::forget(guard);

    let lines: Vec<&str> = out
        .lines()
        .chain(err.lines())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(lines.len() >= 3, "too few log lines:\n{out}{err}");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "an escape code in: {line}");
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed.is_object(), "not an object: {line}");
        assert!(!line.contains(&email), "an email address at info: {line}");
    }
    let messages: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_owned))
        .collect();
    for expected in ["Inside gateway listening", "signed up", "gateway stopped"] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no {expected:?} in {messages:?}"
        );
    }
}
