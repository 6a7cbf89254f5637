//! `/v1/sessions`: start, read, finalize, report.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use inside_schemas::{CreateSession, ErrorBody, Report, ReportPending, Session, SessionStatus};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::routes::require_member;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", post(create))
        .route("/v1/sessions/{sid}", get(read))
        .route("/v1/sessions/{sid}/finalize", post(finalize))
        .route("/v1/sessions/{sid}/report", get(report))
}

/// The session, if `user` may see it (404 otherwise).
pub(crate) async fn visible_session(state: &AppState, sid: Uuid, user: Uuid) -> ApiResult<Session> {
    let session = state.store.session(sid).await.map_err(|e| match e {
        inside_store::StoreError::NotFound => ApiError::not_found("session"),
        other => other.into(),
    })?;
    require_member(state, session.relationship_id, user)
        .await
        .map_err(|_| ApiError::not_found("session"))?;
    Ok(session)
}

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", security(("bearer" = [])), request_body = CreateSession,
    responses((status = 201, body = Session), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`consent_required`: a member has not granted consent", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<CreateSession>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    require_member(&state, req.relationship_id, user.id).await?;
    let rel = state.store.relationship(req.relationship_id).await?;
    if let Some(m) = rel.member_without_consent() {
        return Err(ApiError::Forbidden(
            "consent_required",
            format!(
                "every member must grant consent first ({} is {:?})",
                m.email, m.consent
            )
            .to_lowercase(),
        ));
    }
    let session = state
        .store
        .create_session(req.relationship_id, user.id)
        .await?;
    tracing::info!(sid = %session.id, "session started");
    Ok((StatusCode::CREATED, Json(session)))
}

#[utoipa::path(get, path = "/v1/sessions/{sid}", tag = "sessions", security(("bearer" = [])), params(("sid" = Uuid, Path)),
    responses((status = 200, body = Session), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    user: AuthUser,
    Path(sid): Path<Uuid>,
) -> ApiResult<Json<Session>> {
    Ok(Json(visible_session(&state, sid, user.id).await?))
}

#[utoipa::path(post, path = "/v1/sessions/{sid}/finalize", tag = "sessions", security(("bearer" = [])), params(("sid" = Uuid, Path)),
    responses((status = 202, description = "report job enqueued", body = Session), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "already finalized", body = ErrorBody)))]
pub async fn finalize(
    State(state): State<AppState>,
    user: AuthUser,
    Path(sid): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    visible_session(&state, sid, user.id).await?;
    // asked while the session is still active: researchers hear of the end of a session
    // whose copies they were getting
    let tell_researchers = state.research.allows(sid).await;
    let session = state.store.begin_finalize(sid).await.map_err(|e| match e {
        inside_store::StoreError::Conflict(m) => ApiError::Conflict("already_finalized", m),
        other => other.into(),
    })?;
    // First: every gateway stops reading the session's sockets and closes them with 4409,
    // recording what each published; the report job waits for that and for the rest to be
    // recorded.
    if let Err(e) = state
        .bus
        .publish_json(
            state.bus.subjects().state(sid),
            &inside_bus::StateEvent::Finalized,
        )
        .await
    {
        tracing::warn!(%sid, error = %e, "announcing the finalize failed");
    }
    if tell_researchers {
        state.research.announce_finalized(sid).await;
    }
    state.reports.enqueue(sid).await?;
    tracing::info!(%sid, "session finalizing; report job enqueued");
    Ok((StatusCode::ACCEPTED, Json(session)))
}

#[utoipa::path(get, path = "/v1/sessions/{sid}/report", tag = "sessions", security(("bearer" = [])), params(("sid" = Uuid, Path)),
    responses((status = 200, description = "the report; `complete` is false (with `incomplete_reason`) when it was written without everything published for the session", body = Report),
        (status = 202, description = "not written yet", body = ReportPending),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`report_failed`: the report job failed after its retries (session status `failed`); an operator can re-run it with `gateway report rerun <sid>`", body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    user: AuthUser,
    Path(sid): Path<Uuid>,
) -> ApiResult<Response> {
    let session = visible_session(&state, sid, user.id).await?;
    if session.status == SessionStatus::Failed {
        // the reason stays with the operators: it may be an internal error's text
        return Err(ApiError::Conflict(
            "report_failed",
            "the report could not be written; it will not come without an operator's re-run".into(),
        ));
    }
    Ok(match state.store.report(sid).await? {
        Some(r) => Json(r).into_response(),
        None => (
            StatusCode::ACCEPTED,
            Json(ReportPending {
                status: "pending".into(),
            }),
        )
            .into_response(),
    })
}
