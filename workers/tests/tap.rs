//! `worker tap` as a real process on a nats-server running the shipped configuration: it
//! reads as the read-only `researcher` identity, prints the session's research copies, and
//! when the session is finalized prints a last `finalized` line and exits 0. The test plays
//! the gateway (identity `gateway`), publishing what the gateway's finalize publishes
//! (server/tests/research.rs proves the gateway does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use inside_bus::{StateEvent, Subjects};
use inside_schemas::FeatureFrame;
use serde_json::Value;
use uuid::Uuid;

use inside_testkit::nats_server;
use nats_server::{NatsServer, GATEWAY, RESEARCHER};

const T: Duration = Duration::from_secs(20);

/// A `worker tap` process, its stdout lines and stderr lines as channels; killed when dropped.
struct Tap {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

impl Tap {
    fn start(env: &[(&str, String)], sid: Uuid) -> Tap {
        // its own folder, so no `.env` or `inside.toml` of the checkout leaks in
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["tap", "--session", &sid.to_string()])
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the worker binary starts");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Tap {
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// Waits for the stderr line saying the subscriptions are in place.
    fn wait_tapping(&self) {
        let deadline = Instant::now() + T;
        let mut seen = Vec::new();
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains("tapping the session") {
                return;
            }
            seen.push(line);
        }
        panic!("tap not subscribed within {T:?}:\n{}", seen.join("\n"));
    }

    fn next_line(&self) -> Value {
        let line = self.stdout.recv_timeout(T).expect("a line from the tap");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The exit status, within `within`.
    fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_prints_the_session_and_exits_when_it_is_finalized() {
    let nats = NatsServer::shipped();
    let prefix = format!("taptest{}", Uuid::new_v4().simple());
    let subjects = Subjects::new(prefix.clone());
    let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
    let mut env = nats.env(RESEARCHER);
    env.push(("NATS_SUBJECT_PREFIX", prefix));
    let mut tap = Tap::start(&env, sid);
    tap.wait_tapping();

    let gateway = nats.connect(GATEWAY).await;
    let frame = FeatureFrame {
        timestamp_ms: 1_000,
        speaking_rate: 6.0,
        overlap_ratio: 0.0,
        seq: Some(7),
        received_ms: None,
    };
    gateway
        .publish(
            subjects.research_frames(sid, uid),
            serde_json::to_vec(&frame).unwrap().into(),
        )
        .await
        .unwrap();
    // another session's end is not this tap's
    gateway
        .publish(
            subjects.research_state(Uuid::new_v4()),
            serde_json::to_vec(&StateEvent::Finalized).unwrap().into(),
        )
        .await
        .unwrap();
    gateway.flush().await.unwrap();
    let first = tap.next_line();
    assert_eq!(first["kind"], "frame", "{first}");
    assert_eq!(first["user_id"], uid.to_string());
    assert_eq!(first["payload"]["seq"], 7);
    assert!(
        tap.exit_within(Duration::from_millis(500)).is_none(),
        "the tap ended before its session did"
    );

    let finalized_at = Instant::now();
    gateway
        .publish(
            subjects.research_state(sid),
            serde_json::to_vec(&StateEvent::Finalized).unwrap().into(),
        )
        .await
        .unwrap();
    gateway.flush().await.unwrap();
    let last = tap.next_line();
    assert_eq!(last["kind"], "finalized", "{last}");
    assert_eq!(last["payload"]["event"], "finalized");
    let status = tap
        .exit_within(T)
        .expect("the tap exits once its session is finalized");
    assert!(status.success(), "{status}");
    // it printed the speaker events still in flight for a while (FINALIZE_LINGER), not forever
    let took = finalized_at.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        tap.stdout.try_recv().is_err(),
        "the finalized line is the last"
    );
    // the only refusals are of the tap's own confirmation on its inbox (a read-only identity
    // may publish nothing: workers/src/tap.rs); every research subject was allowed
    let refused: Vec<String> = nats
        .violations()
        .into_iter()
        .filter(|v| !v.contains("Subject \"_INBOX."))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}
