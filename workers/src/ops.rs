//! What ops need of a worker process: `/livez` (the process serves),
//! `/readyz` (it takes work: dependencies up, consumers subscribed), `/health` (each
//! dependency: database, and with NATS the connection, JetStream's job stream and Redis) and
//! `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use inside_process::Recorder;
use inside_store::limiter::Limiter;
use inside_store::Store;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// How long one dependency may take to answer a check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/health` and `/readyz` look at. The fleet's connections are added once made, so
/// the ops server answers (`/livez`) while the worker is still connecting or loading its
/// model, and says what it waits for.
#[derive(Clone)]
pub struct Probes(Arc<ProbesInner>);

struct ProbesInner {
    store: Store,
    /// With NATS: the connections below must exist and answer for the worker to be healthy.
    distributed: bool,
    fleet: OnceLock<Fleet>,
    /// Consumers subscribed and report jobs running: work can be taken.
    started: AtomicBool,
}

/// A fleet member's connections, checked by `/health` and `/readyz`.
pub struct Fleet {
    pub nats: async_nats::Client,
    /// `None`: process-local limits (`ALLOW_PROCESS_LOCAL_LIMITS`), nothing to ping.
    pub redis: Option<Limiter>,
    /// The JetStream stream report jobs come from (`INSIDE_JOBS`).
    pub jobs_stream: String,
}

impl Probes {
    pub fn new(store: Store, distributed: bool) -> Self {
        Self(Arc::new(ProbesInner {
            store,
            distributed,
            fleet: OnceLock::new(),
            started: AtomicBool::new(false),
        }))
    }

    /// The fleet's connections are made.
    pub fn connected(&self, fleet: Fleet) {
        let _ = self.0.fleet.set(fleet);
    }

    /// The worker takes work from now on.
    pub fn started(&self) {
        self.0.started.store(true, Ordering::Relaxed);
    }

    /// Every dependency's check: `ok` or the error.
    async fn checks(&self) -> BTreeMap<&'static str, String> {
        let mut checks = BTreeMap::new();
        checks.insert("database", check(self.0.store.ping()).await);
        if !self.0.distributed {
            return checks;
        }
        let Some(fleet) = self.0.fleet.get() else {
            checks.insert("nats", "error: not connected yet".into());
            return checks;
        };
        let nats = match fleet.nats.connection_state() {
            async_nats::connection::State::Connected => "ok".to_string(),
            other => format!("error: {other}"),
        };
        let js = async_nats::jetstream::new(fleet.nats.clone());
        let (redis, jetstream) = tokio::join!(
            async {
                match &fleet.redis {
                    Some(limiter) => Some(check(limiter.ping()).await),
                    None => None,
                }
            },
            check(async { js.get_stream(&fleet.jobs_stream).await.map(|_| ()) }),
        );
        checks.insert("nats", nats);
        checks.insert("jetstream", jetstream);
        if let Some(redis) = redis {
            checks.insert("redis", redis);
        }
        checks
    }
}

/// An answer within [`CHECK_TIMEOUT`]: `ok` or the error.
async fn check<E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<(), E>>,
) -> String {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".into(),
    }
}

#[derive(Clone)]
struct Ops {
    probes: Probes,
    metrics: Recorder,
}

/// Serves `/livez`, `/readyz`, `/health` and `/metrics` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    probes: Probes,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, crate::WorkerError> {
    let metrics = Recorder::install(env!("CARGO_PKG_VERSION"));
    crate::telemetry::describe_metrics();
    crate::telemetry::register_at_zero();
    let app = Router::new()
        .route("/livez", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route(
            "/metrics",
            get(|State(o): State<Ops>| async move { o.metrics.render() }),
        )
        .with_state(Ops { probes, metrics });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(crate::WorkerError::io(format!(
            "binding the ops address {addr} (WORKER_BIND_ADDR)"
        )))?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    }))
}

/// 200 when every dependency answers, 503 naming the ones that do not.
async fn health(State(o): State<Ops>) -> (StatusCode, Json<serde_json::Value>) {
    let checks = o.probes.checks().await;
    let ok = checks.values().all(|v| v == "ok");
    answer(ok, if ok { "ok" } else { "degraded" }, checks)
}

/// `/health`, and the worker has subscribed and takes work.
async fn readyz(State(o): State<Ops>) -> (StatusCode, Json<serde_json::Value>) {
    let checks = o.probes.checks().await;
    let up = checks.values().all(|v| v == "ok");
    let started = o.probes.0.started.load(Ordering::Relaxed);
    let status = match (up, started) {
        (true, true) => "ok",
        (true, false) => "starting",
        (false, _) => "degraded",
    };
    answer(up && started, status, checks)
}

fn answer(
    ok: bool,
    status: &str,
    checks: BTreeMap<&'static str, String>,
) -> (StatusCode, Json<serde_json::Value>) {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"status": status, "version": env!("CARGO_PKG_VERSION"), "checks": checks})),
    )
}
