//! `/health` with a check per dependency, `/livez` and `/readyz` for orchestrators, and
//! `/metrics` for Prometheus.

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
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// An answer within [`CHECK_TIMEOUT`]: `ok` or the error.
pub(crate) async fn check<E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<(), E>>,
) -> String {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".into(),
    }
}

/// Each dependency: database, limiter (Redis when set), and the bus's own checks (with NATS
/// the connection and the JetStream stream report jobs go to).
async fn checks(state: &AppState) -> BTreeMap<String, String> {
    let (database, limiter, bus) = tokio::join!(
        check(state.store.ping()),
        check(state.limiter.ping()),
        state.bus_health.checks()
    );
    let mut checks = BTreeMap::from([
        ("database".to_string(), database),
        ("limiter".to_string(), limiter),
    ]);
    checks.extend(bus);
    checks
}

async fn report(state: &AppState) -> (StatusCode, Json<Health>) {
    let (checks, speaker_available) = tokio::join!(checks(state), state.speakers.available());
    let ok = checks.values().all(|v| v == "ok");
    let body = Health {
        status: if ok { "ok" } else { "degraded" }.into(),
        version: state.settings.app_version.clone(),
        checks,
        speaker_available,
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

#[utoipa::path(get, path = "/health", tag = "ops",
    responses((status = 200, description = "every dependency answers; `speaker_available` says whether live audio would be attributed (informational)", body = Health), (status = 503, description = "a dependency is down; its check names the error", body = Health)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    report(&state).await
}

#[utoipa::path(get, path = "/livez", tag = "ops",
    responses((status = 200, description = "the process serves requests (restart it when this fails)")))]
pub async fn livez() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "ready for traffic: every dependency answers", body = Health), (status = 503, description = "a dependency is down: send no traffic here (its check names the error)", body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    report(&state).await
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
