//! `/v1/pokes`: little signals between partners, only in relationships every
//! member has accepted (consent `granted`), rate limited per sender and
//! recipient (so a fresh relationship with the same person does not reset the
//! count), delivered live to the partner's open sockets and kept in the history of each
//! active session of the relationship, for a socket that reconnects with `?since=`.

use std::time::Duration;

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use inside_bus::{header_map, SESSION_EVENT_IDS_HEADER};
use inside_schemas::{CreatePoke, ErrorBody, HistoryKind, Poke, PokePage};
use inside_store::limiter::Hit;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::routes::{page_cursor, page_limit, require_member};
use crate::state::AppState;

const MAX_MESSAGE_CHARS: usize = 500;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/pokes", get(list).post(create))
}

#[utoipa::path(post, path = "/v1/pokes", tag = "pokes", security(("bearer" = [])), request_body = CreatePoke,
    responses((status = 201, body = Poke), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`consent_required`: a member has not accepted the relationship (consent not `granted`)", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "unknown kind, message too long or with control characters", body = ErrorBody),
        (status = 429, description = "too many pokes to this recipient (POKE_LIMIT per POKE_WINDOW_SECONDS, across relationships); see Retry-After", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<CreatePoke>,
) -> ApiResult<(StatusCode, Json<Poke>)> {
    let message = req
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    if message.is_some_and(|m| m.chars().count() > MAX_MESSAGE_CHARS) {
        return Err(ApiError::validation(format!(
            "message must be at most {MAX_MESSAGE_CHARS} characters"
        )));
    }
    if let Some(m) = &req.message {
        crate::text::check_plain("message", m)?;
    }
    require_member(&state, req.relationship_id, user.id).await?;
    let rel = state.store.relationship(req.relationship_id).await?;
    // Without both members' consent the partner never agreed to hear from the sender.
    if rel.member_without_consent().is_some() {
        return Err(ApiError::Forbidden(
            "consent_required",
            "pokes need a relationship every member has accepted (consent granted)".into(),
        ));
    }
    let partners: Vec<Uuid> = rel
        .members
        .iter()
        .filter_map(|m| m.user_id)
        .filter(|m| *m != user.id)
        .collect();
    let window = Duration::from_secs(state.settings.poke_window_seconds);
    for to in &partners {
        // Per recipient, not per relationship: the limit protects the person.
        let key = format!("poke:{}:{to}", user.id);
        if let Hit::Limited(wait) = state
            .limiter
            .hit(&key, u64::from(state.settings.poke_limit), window)
            .await?
        {
            return Err(ApiError::RateLimited {
                retry_after_s: wait.as_secs(),
            });
        }
    }
    let poke = state
        .store
        .create_poke(req.relationship_id, user.id, req.kind, message)
        .await?;
    deliver(&state, &partners, &poke).await;
    Ok((StatusCode::CREATED, Json(poke)))
}

/// Publishes `poke` to each of `to`'s poke subject (every gateway holding one of their sockets
/// delivers it), after appending it to the history of each active session of the
/// relationship; the ids travel in `Inside-Session-Event-Ids`.
async fn deliver(state: &AppState, to: &[Uuid], poke: &Poke) {
    let Ok(payload) = serde_json::to_vec(poke).map(Bytes::from) else {
        return;
    };
    let sessions = if state.events.is_on() {
        state
            .store
            .active_sessions(poke.relationship_id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading active sessions failed; poke sent without ids");
                Vec::new()
            })
    } else {
        Vec::new()
    };
    for uid in to {
        let mut ids = String::new();
        for sid in &sessions {
            match state
                .events
                .append(*sid, Some(*uid), HistoryKind::Poke, &payload)
                .await
            {
                Ok(Some(id)) => {
                    let sep = if ids.is_empty() { "" } else { "," };
                    let _ = write!(ids, "{sep}{sid}:{id}");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%sid, error = %e, "event history unavailable; poke sent without an id")
                }
            }
        }
        let subject = state.bus.subjects().pokes(*uid);
        let sent = if ids.is_empty() {
            state.bus.publish(subject, payload.clone()).await
        } else {
            let headers = header_map([(SESSION_EVENT_IDS_HEADER, ids)]);
            state
                .bus
                .publish_with_headers(subject, headers, payload.clone())
                .await
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "publishing a poke failed");
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PokeParams {
    /// The relationship whose pokes to list.
    pub rid: Uuid,
    /// 1..=100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^-?[0-9]{1,18}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/pokes", tag = "pokes", security(("bearer" = [])), params(PokeParams),
    responses((status = 200, body = PokePage), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "bad rid, limit or cursor", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(p): Query<PokeParams>,
) -> ApiResult<Json<PokePage>> {
    let limit = page_limit(p.limit)?;
    let before = page_cursor(p.cursor.as_deref())?;
    require_member(&state, p.rid, user.id).await?;
    let (items, next_cursor) = state.store.pokes(p.rid, limit, before).await?;
    Ok(Json(PokePage { items, next_cursor }))
}
