//! `/health` with a check per dependency, and `/metrics` for Prometheus.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use inside_schemas::Health;

use crate::extract::Json;
use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

async fn check<E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<(), E>>,
) -> String {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".into(),
    }
}

#[utoipa::path(get, path = "/health", tag = "ops",
    responses((status = 200, description = "every dependency answers", body = Health), (status = 503, description = "a dependency is down; its check names the error", body = Health)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (database, limiter) = tokio::join!(check(state.store.ping()), check(state.limiter.ping()));
    let bus = match &state.nats {
        None => "ok".to_string(),
        Some(c) => match c.connection_state() {
            async_nats::connection::State::Connected => check(async { c.flush().await }).await,
            other => format!("error: {other}"),
        },
    };
    let checks = BTreeMap::from([
        ("database".to_string(), database),
        ("bus".to_string(), bus),
        ("limiter".to_string(), limiter),
    ]);
    let ok = checks.values().all(|v| v == "ok");
    let body = Health {
        status: if ok { "ok" } else { "degraded" }.into(),
        version: state.settings.app_version.clone(),
        checks,
    };
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(n) = state.store.open_jobs().await {
        metrics::gauge!("inside_report_jobs_open").set(n as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
