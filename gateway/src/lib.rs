//! The Inside gateway library: REST and WebSocket in front of the store, the bus and the
//! workers. `app(state)` is the whole HTTP surface, so tests can drive it; `serve` runs it
//! until shutdown. What differs by deployment comes in as [`capabilities`]; the binary that
//! chooses them and runs the embedded pipeline is the `inside-server` crate.

pub mod asyncapi;
pub mod auth;
pub mod capabilities;
pub mod cors;
pub mod docs;
pub mod error;
pub mod extract;
pub mod mail;
pub mod openapi;
pub mod realtime;
pub mod rerun;
pub mod routes;
mod server;
pub mod state;
pub mod telemetry;
pub mod text;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, StartupError};
pub use crate::state::{AppState, Connections};

/// JSON bodies are small; audio routes set their own limit.
const JSON_BODY_LIMIT: usize = 1 << 20;
/// How long a stopping gateway waits for its sockets to end.
const SOCKET_DRAIN: Duration = Duration::from_secs(5);

pub fn app(state: AppState) -> Router {
    let cors = cors::layer(&state.settings.cors_origins);
    let api = Router::new()
        .merge(routes::auth::router())
        .merge(routes::users::router())
        .merge(routes::relationships::router())
        .merge(routes::sessions::router())
        .merge(routes::history::router())
        .merge(routes::activities::router())
        .merge(routes::pokes::router())
        .merge(routes::health::router())
        .merge(realtime::router())
        .merge(docs::router())
        .route_layer(axum::middleware::from_fn(telemetry::observe));
    api.fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(inside_schemas::ErrorBody::new(
                    "method_not_allowed",
                    "method not allowed on this route",
                )),
            )
        })
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(cors)
        .with_state(state)
}

/// Serves on `listener` until `shutdown` fires and waits for in-flight requests and sockets
/// to finish; then cancels `shutdown` for the rest of the process, waits for `companions`
/// (what else this process runs: the embedded pipeline and report jobs) to stop, and closes
/// the database.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
    companions: impl std::future::Future<Output = ()> + Send,
) -> Result<(), StartupError> {
    let addr = listener.local_addr().map_err(|source| StartupError::Io {
        step: "reading the listener's address".into(),
        source,
    })?;
    tracing::info!(%addr, database = ?state.store.backend(), nats = state.bus.nats().is_some(), redis = state.settings.redis_url.is_some(), "Inside gateway listening");
    let hub = state.hub.clone();
    let limits = server::ConnectionLimits {
        header_read_timeout: Duration::from_secs_f64(state.settings.http_header_read_timeout),
        idle_timeout: Duration::from_secs_f64(state.settings.http_idle_timeout),
        per_client: state.settings.http_max_connections_per_client,
    };
    let draining = shutdown.child_token();
    let closing = tokio::spawn({
        let draining = draining.clone();
        async move {
            draining.cancelled().await;
            // Upgraded sockets are not requests: tell them to go.
            hub.close_all();
        }
    });
    server::serve_connections(listener, app(state.clone()), limits, draining).await;
    let _ = closing.await;
    // each socket records what it published as it ends: let them, before the database closes
    let sockets_gone = tokio::time::Instant::now() + SOCKET_DRAIN;
    while state.hub.sockets() > 0 && tokio::time::Instant::now() < sockets_gone {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the last seqs the sockets accepted, for their phones' next join on another gateway
    state.events.write_frame_seqs_now().await;
    shutdown.cancel();
    companions.await;
    state.store.close().await;
    tracing::info!("gateway stopped");
    Ok(())
}
