//! A `worker` process as an orchestrator sees it, on a nats-server and a redis-server of the
//! test's own: `/livez` answers while it serves, `/readyz` and `/health` only while NATS,
//! JetStream and Redis answer, and `/health` names the one that is down. And a worker given
//! `NATS_URL` without `REDIS_URL` refuses to start, naming both settings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use inside_testkit::nats_server;
use inside_testkit::prometheus::{assert_build_info, assert_every_series_described, sample};

use nats_server::NatsServer;

const T: Duration = Duration::from_secs(20);

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// A child process killed when dropped, its stderr kept for failure messages.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the process starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A redis-server on a free port, nothing persisted.
fn redis_server() -> (Proc, String) {
    let port = free_addr().port();
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    let redis = Proc::spawn(cmd);
    let deadline = Instant::now() + T;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (redis, format!("redis://127.0.0.1:{port}"))
}

/// A `worker` in a folder of its own (no `.env` of the checkout leaks in).
fn worker(dir: &std::path::Path, env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Proc::spawn(cmd)
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, Value)> {
    let res = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    let status = res.status().as_u16();
    Some((status, res.json().await.ok()?))
}

/// Polls `path` until it answers `status`; the last body.
async fn wait_for(addr: SocketAddr, path: &str, status: u16, w: &Proc) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let got = get(addr, path).await;
        if let Some((s, body)) = &got {
            if *s == status {
                return body.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {status} (last: {got:?}):\n{}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_health_fail_naming_redis_then_nats_while_livez_stays_up() {
    let nats = NatsServer::with_jetstream();
    let (mut redis, redis_url) = redis_server();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let w = worker(
        dir.path(),
        &[
            (
                "DATABASE_URL",
                format!("sqlite://{}/inside.db", dir.path().display()),
            ),
            ("DATA_DIR", dir.path().display().to_string()),
            ("NATS_URL", nats.url()),
            ("REDIS_URL", redis_url),
            ("WORKER_BIND_ADDR", addr.to_string()),
        ],
    );
    let ready = wait_for(addr, "/readyz", 200, &w).await;
    assert_eq!(ready["status"], "ok", "{ready}");
    let (s, health) = get(addr, "/health").await.unwrap();
    assert_eq!(s, 200, "{health}");
    for dep in ["database", "nats", "jetstream", "redis"] {
        assert_eq!(health["checks"][dep], "ok", "{dep}: {health}");
    }
    assert_eq!(get(addr, "/livez").await.unwrap().0, 200);

    // Redis goes: the limits the fleet shares are gone, the worker is not ready
    redis.kill();
    let health = wait_for(addr, "/health", 503, &w).await;
    assert!(
        health["checks"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("error"),
        "{health}"
    );
    assert_eq!(health["checks"]["nats"], "ok", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(get(addr, "/readyz").await.unwrap().0, 503);
    assert_eq!(get(addr, "/livez").await.unwrap().0, 200);

    // NATS goes: no frames, no jobs
    drop(nats);
    let deadline = Instant::now() + T;
    loop {
        let (s, health) = get(addr, "/health").await.unwrap();
        assert_eq!(s, 503);
        let nats_down = health["checks"]["nats"]
            .as_str()
            .unwrap()
            .starts_with("error");
        let js_down = health["checks"]["jetstream"]
            .as_str()
            .unwrap()
            .starts_with("error");
        if nats_down && js_down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NATS never reported down: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(addr, "/readyz").await.unwrap().0, 503);
    assert_eq!(get(addr, "/livez").await.unwrap().0, 200, "{}", w.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_nats_and_no_redis_refuses_to_start_naming_both_settings() {
    let nats = NatsServer::with_jetstream();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let env = vec![
        (
            "DATABASE_URL",
            format!("sqlite://{}/inside.db", dir.path().display()),
        ),
        ("DATA_DIR", dir.path().display().to_string()),
        ("NATS_URL", nats.url()),
        ("WORKER_BIND_ADDR", addr.to_string()),
    ];
    let mut refused = worker(dir.path(), &env);
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = refused.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker kept running:\n{}",
            refused.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // the stderr reader may still be draining the pipe
    std::thread::sleep(Duration::from_millis(100));
    let log = refused.log();
    assert_eq!(status.code(), Some(2), "{log}");
    for name in ["NATS_URL", "REDIS_URL", "ALLOW_PROCESS_LOCAL_LIMITS"] {
        assert!(log.contains(name), "{name} not named:\n{log}");
    }

    // per-process limits, asked for: it runs
    let mut env = env;
    env.push(("ALLOW_PROCESS_LOCAL_LIMITS", "true".into()));
    let w = worker(dir.path(), &env);
    let health = wait_for(addr, "/readyz", 200, &w).await;
    assert!(health["checks"].get("redis").is_none(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_explain_every_series_and_start_the_worker_series_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let w = worker(
        dir.path(),
        &[
            (
                "DATABASE_URL",
                format!("sqlite://{}/inside.db", dir.path().display()),
            ),
            ("WORKER_BIND_ADDR", addr.to_string()),
        ],
    );
    wait_for(addr, "/livez", 200, &w).await;
    let scrape = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_every_series_described(&scrape);
    assert_build_info(&scrape, env!("CARGO_PKG_VERSION"));
    // a dashboard shows 0, not "no data", before the first job or frame
    for series in [
        "inside_jobs_total{outcome=\"done\"}",
        "inside_jobs_total{outcome=\"failed\"}",
        "inside_frames_received_total",
        "inside_nudges_total{type=\"SLOW_DOWN\"}",
        "inside_reports_written_total",
        "inside_jobs_pending",
    ] {
        assert_eq!(sample(&scrape, series), Some(0.0), "{series}:\n{scrape}");
    }
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("process_cpu_seconds_total ")),
        "{scrape}"
    );
}
