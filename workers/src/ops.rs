//! What ops need of a worker process: logs, signals, `/health` and `/metrics`.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use inside_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub fn init_tracing(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if debug {
        "debug,sqlx=warn"
    } else {
        "info,sqlx=warn"
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // stdout is for data (`worker embed`, `worker tap`)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutdown signal received; draining");
        token.cancel();
    });
}

#[derive(Clone)]
struct Ops {
    store: Store,
    metrics: PrometheusHandle,
}

/// Serves `/health` and `/metrics` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _ = metrics::set_global_recorder(recorder);
    let app = Router::new()
        .route("/health", get(health))
        .route(
            "/metrics",
            get(|State(o): State<Ops>| async move { o.metrics.render() }),
        )
        .with_state(Ops { store, metrics });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    }))
}

async fn health(State(o): State<Ops>) -> (StatusCode, Json<serde_json::Value>) {
    let database = match o.store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error: {e}"),
    };
    let ok = database == "ok";
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(
            json!({"status": if ok {"ok"} else {"degraded"}, "version": env!("CARGO_PKG_VERSION"), "checks": {"database": database}}),
        ),
    )
}
