//! `GET /v1/sessions/{sid}/ws?token=…[&since=<event_id>]`: every check happens before the
//! upgrade so a refused client gets a plain HTTP status (400 a `since` that is not an event
//! id, 401 bad token, 404 unknown session, 403 non-member, a member without consent or
//! foreign browser origin, 429 over the socket caps); a finalized session is accepted and
//! closed with 4409 so the client learns why.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use inside_schemas::SessionStatus;
use serde::Deserialize;
use uuid::Uuid;

use super::caps::CapHit;
use super::connection::Connection;
use super::consent::require_consent;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, Path, Query};
use crate::state::AppState;

/// Socket buffers: axum's default 128 KiB read buffer per socket would cost more than a
/// gigabyte for 10,000 idle phones. Client messages are small (a frame is ~130 bytes) and a
/// bigger one reserves its own length, so 256 bytes is enough.
const READ_BUFFER: usize = 256;
const WRITE_BUFFER: usize = 4 * 1024;
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Deserialize)]
pub struct WsParams {
    token: Option<String>,
    /// The last `event_id` the client got, when it reconnects (a string, so that a bad one
    /// is answered with the route's own 400).
    since: Option<String>,
}

/// `since`: an event id, an integer ≥ 0.
fn parse_since(since: &str) -> Result<u64, ApiError> {
    since.parse().map_err(|_| {
        ApiError::BadParameter(
            "invalid_since",
            "since must be an event_id (an integer >= 0)".into(),
        )
    })
}

pub async fn upgrade(
    State(state): State<AppState>,
    Path(sid): Path<Uuid>,
    Query(params): Query<WsParams>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| crate::cors::origin_allowed(&state.settings.cors_origins, o));
        if !allowed {
            return Err(ApiError::Forbidden(
                "origin_not_allowed",
                "this origin may not open a socket".into(),
            ));
        }
    }
    let since = params.since.as_deref().map(parse_since).transpose()?;
    let token = params
        .token
        .as_deref()
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .ok_or_else(|| ApiError::unauthorized("missing token"))?;
    let access = state.keys.verify_access(token)?;
    // a deleted account's token is refused here as on every REST route
    state.accounts.require(&state.store, access.user).await?;
    let uid = access.user;
    let session = state.store.session(sid).await.map_err(|e| match e {
        inside_store::StoreError::NotFound => ApiError::not_found("session"),
        other => other.into(),
    })?;
    let rid = session.relationship_id;
    require_consent(&state, rid, uid).await?;
    let slot = state.hub.reserve(uid, client).map_err(|hit| {
        metrics::counter!("inside_ws_sockets_refused_total", "cap" => match hit {
            CapHit::User => "user",
            CapHit::Client => "client",
        })
        .increment(1);
        ApiError::TooMany(
            "too_many_sockets",
            match hit {
                CapHit::User => "this account holds as many sockets as it may",
                CapHit::Client => "this address holds as many sockets as it may",
            }
            .into(),
        )
    })?;
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let ws = ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    let active = session.status == SessionStatus::Active;
    // the connection's future is the socket task's whole state, held by every idle phone:
    // `run` splits the socket before that future exists so it is not stored twice
    Ok(ws
        .on_upgrade(move |socket| {
            Connection {
                state,
                sid,
                uid,
                rid,
                expires_at: access.expires_at,
                since,
                _slot: slot,
            }
            .run(socket, active)
        })
        .into_response())
}
