//! The worker fleet as real processes on real NATS, Redis and PostgreSQL:
//! two `worker` binaries share the queue group; one is killed with SIGKILL
//! and every frame after it still yields its nudge; a report job in flight
//! on a worker that is then killed is redelivered to another and the report
//! is stored once. NATS is a nats-server of the test's own running the shipped
//! configuration (`deploy/nats/`): the workers connect as `worker`, the test
//! plays the gateway as `gateway`, and the server refuses none of what they do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use inside_bus::Subjects;
use inside_schemas::{ConsentStatus, EventBody, FeatureFrame, Nudge, RelationshipKind};
use inside_store::Store;
use uuid::Uuid;

// a nats-server of the test's own, with the shipped identities and permissions; the cleanup
// of what a test leaves on the shared services
use inside_testkit::{nats_server, scratch};

use nats_server::{NatsServer, GATEWAY, WORKER};

const REDIS: &str = "redis://127.0.0.1:6379";
const T: Duration = Duration::from_secs(20);
/// The durable consumer of report jobs (workers/src/pipeline/jobs.rs).
const CONSUMER: &str = "report-writers";

/// A `worker` process; killed when dropped so a failing test leaves none behind.
struct Worker {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts one and waits until its pipeline and its report jobs are running.
    fn start(env: &[(&str, String)]) -> Worker {
        // its own folder, so no `.env` or `inside.toml` of the checkout leaks in
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the worker binary starts");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            // keeps reading after the test stops listening, so the worker never blocks on it
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut want = vec!["analysis pipeline started", "JetStream report jobs started"];
        let deadline = Instant::now() + T;
        let mut seen = Vec::new();
        while !want.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    want.retain(|w| !line.contains(w));
                    seen.push(line);
                }
                Err(_) => panic!("worker not ready within {T:?}:\n{}", seen.join("\n")),
            }
        }
        Worker { child, _dir: dir }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes over-threshold frames `seqs` of (sid, uid) and returns the frame_seq of every
/// nudge that comes back.
async fn frames_to_nudges(
    nc: &async_nats::Client,
    nudges: &mut async_nats::Subscriber,
    subjects: &Subjects,
    (sid, uid): (Uuid, Uuid),
    seqs: std::ops::Range<i64>,
) -> HashSet<i64> {
    let want = seqs.clone().count();
    for seq in seqs {
        let frame = FeatureFrame {
            timestamp_ms: seq * 100,
            speaking_rate: 6.0,
            overlap_ratio: 0.0,
            seq: Some(seq),
            received_ms: None,
        };
        nc.publish(
            subjects.frames(sid, uid),
            serde_json::to_vec(&frame).unwrap().into(),
        )
        .await
        .unwrap();
    }
    nc.flush().await.unwrap();
    let mut got = HashSet::new();
    while got.len() < want {
        match tokio::time::timeout(T, nudges.next()).await {
            Ok(Some(m)) => {
                let nudge: Nudge = serde_json::from_slice(&m.payload).unwrap();
                got.insert(nudge.frame_seq.expect("a nudge names its frame"));
            }
            _ => break,
        }
    }
    got
}

/// Waits until `n` frames of the session are stored (the writer batches for ~20 ms; a kill
/// loses what it holds, so the test lets it land first).
async fn wait_recorded_frames(store: &Store, sid: Uuid, n: usize) {
    let deadline = Instant::now() + T;
    loop {
        let events = store.session_events(sid).await.unwrap();
        let frames = events
            .iter()
            .filter(|e| matches!(e.body, EventBody::Frame(_)))
            .count();
        if frames == n {
            return;
        }
        assert!(Instant::now() < deadline, "{frames} of {n} frames recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn consumer(stream: &async_nats::jetstream::stream::Stream) -> PullConsumer {
    stream.get_consumer(CONSUMER).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_no_frames_after_the_kill_and_their_report_jobs_are_redelivered() {
    let prefix = format!("t{}", Uuid::new_v4().simple());
    let subjects = Subjects::new(prefix.clone());
    // dropped last, after the workers: the database and stream go when the test ends
    let (url, _leftovers) = scratch::fresh_postgres("inside_fleet").await;
    // its JetStream directory goes with it: no stream to clean up
    let nats = NatsServer::shipped();
    let store = Store::connect(&url, 2, false).await.unwrap();
    store.migrate().await.unwrap();
    let a = store.create_user("a@fleet.test", "A", "x").await.unwrap();
    let b = store.create_user("b@fleet.test", "B", "x").await.unwrap();
    let rel = store
        .create_relationship(
            a.id,
            "a@fleet.test",
            "b@fleet.test",
            RelationshipKind::Romantic,
        )
        .await
        .unwrap();
    // workers process the frames of consenting members only
    for member in [a.id, b.id] {
        store
            .set_consent(rel.id, member, ConsentStatus::Granted)
            .await
            .unwrap();
    }
    let sid = store.create_session(rel.id, a.id).await.unwrap().id;
    let mut env = vec![
        ("DATABASE_URL", url.clone()),
        ("REDIS_URL", REDIS.to_string()),
        ("NATS_SUBJECT_PREFIX", prefix.clone()),
        (
            "SECRET_KEY",
            "fleet-test-secret-0123456789abcdef0123".to_string(),
        ),
        ("WORKER_BIND_ADDR", "127.0.0.1:0".to_string()),
        ("NUDGE_RATE_LIMIT_SECONDS", "0".to_string()),
        ("REPORT_JOB_ACK_WAIT_SECONDS", "2".to_string()),
        ("DATABASE_MAX_CONNECTIONS", "3".to_string()),
    ];
    env.extend(nats.env(WORKER));

    // the test publishes frames and report jobs and reads nudges as the gateway would
    let nc = nats.connect(GATEWAY).await;
    // ... and looks at the job consumer as a worker may
    let worker_nc = nats.connect(WORKER).await;
    let mut nudges = nc
        .subscribe(format!("{prefix}.v1.nudges.{sid}.>"))
        .await
        .unwrap();
    let w1 = Worker::start(&env);
    let w2 = Worker::start(&env);

    // Both workers in the queue group: every frame is processed once, every nudge comes back.
    let got = frames_to_nudges(&nc, &mut nudges, &subjects, (sid, a.id), 0..40).await;
    assert_eq!(got, (0..40).collect(), "before the kill");
    wait_recorded_frames(&store, sid, 40).await;

    // kill -9 one worker: the server drops its subscription with its socket, and the frames
    // that follow all go to the survivor.
    w1.kill_9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = frames_to_nudges(&nc, &mut nudges, &subjects, (sid, a.id), 100..140).await;
    assert_eq!(got, (100..140).collect(), "after the kill");
    wait_recorded_frames(&store, sid, 80).await;

    // A report job handed to a worker that cannot ack it (stopped, then killed) ...
    store.begin_finalize(sid).await.unwrap();
    w2.signal("-STOP");
    inside_bus::jobs::publish_report_job(&nc, &subjects, sid)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(worker_nc.clone());
    let mut stream = js.get_stream(subjects.jobs_stream()).await.unwrap();
    let deadline = Instant::now() + T;
    while consumer(&stream)
        .await
        .info()
        .await
        .unwrap()
        .num_ack_pending
        != 1
    {
        assert!(
            Instant::now() < deadline,
            "the job never reached the stopped worker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.report(sid).await.unwrap().is_none());
    w2.kill_9();

    // ... goes to the next worker once its ack wait runs out, and the report is stored once.
    let _w3 = Worker::start(&env);
    let deadline = Instant::now() + T;
    let report = loop {
        if let Some(r) = store.report(sid).await.unwrap() {
            break r;
        }
        assert!(Instant::now() < deadline, "the job was not redelivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report.frames, 80, "every processed frame is in the report");
    let deadline = Instant::now() + T;
    loop {
        let mut c = consumer(&stream).await;
        let info = c.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            assert!(info.num_redelivered <= 1, "{info:?}");
            break;
        }
        assert!(Instant::now() < deadline, "job still open: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        0,
        "acked and gone"
    );
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (reports,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM reports WHERE session_id = $1")
        .bind(sid.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reports, 1);
    let refused = nats.violations();
    assert!(
        refused.is_empty(),
        "the shipped NATS permissions refused what gateway and workers do:\n{}",
        refused.join("\n")
    );
}
