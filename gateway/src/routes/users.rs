//! `/v1/users/me` (read, delete) and the caller's voiceprint.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use inside_engine::speech::{Codec, SpeechError, ENROL_MAX_BYTES};
use inside_schemas::{ErrorBody, User, VoiceprintEnrolled, VoiceprintStatus};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;

/// Enrolment audio: 3..=60 s.
const MIN_SECONDS: f64 = 3.0;
pub const MAX_AUDIO_BYTES: usize = ENROL_MAX_BYTES;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/me", get(me).delete(delete_me))
        .route(
            "/v1/users/me/voiceprint",
            get(voiceprint_status)
                .put(enrol_voiceprint)
                .delete(delete_voiceprint)
                .layer(DefaultBodyLimit::max(MAX_AUDIO_BYTES)),
        )
}

#[utoipa::path(get, path = "/v1/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<User>> {
    match state.store.user(user.id).await {
        Ok(u) => Ok(Json(u)),
        Err(inside_store::StoreError::NotFound) => {
            Err(ApiError::unauthorized("user no longer exists"))
        }
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(delete, path = "/v1/users/me", tag = "users", security(("bearer" = [])),
    description = "Deletes the caller's account at once and for good: the user, their voiceprint and refresh tokens. \
        Every relationship the caller was a member of ends and is erased for every member: its memberships, invitations, pokes, \
        and its sessions with their recorded events and reports (shared sessions are records of both people's conversation, \
        so none is kept with one side missing); the partner's account itself is untouched. Open sockets of those sessions are closed. \
        The caller's access tokens are refused (401) on this gateway from the moment of the answer, on other gateways within 5 s.",
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody)))]
pub async fn delete_me(State(state): State<AppState>, user: AuthUser) -> ApiResult<StatusCode> {
    // read before the delete erases them: their open sockets are closed after it
    let mut running = std::collections::HashMap::new();
    for rel in state.store.relationships_of(user.id).await? {
        running.insert(rel.id, state.store.active_sessions(rel.id).await?);
    }
    let ended = match state.store.delete_user(user.id).await {
        Ok(ended) => ended,
        Err(inside_store::StoreError::NotFound) => {
            return Err(ApiError::unauthorized("user no longer exists"))
        }
        Err(e) => return Err(e.into()),
    };
    state.accounts.forget(user.id);
    for (rid, members) in &ended {
        if let Some(sids) = running.get(rid) {
            if let Err(e) = state.expel_from_sessions(sids, members).await {
                // the account is gone either way: report, do not fail the answer
                tracing::warn!(relationship = %rid, error = ?e, "closing the ended relationship's sockets failed");
            }
        }
        tracing::info!(relationship = %rid, members = members.len(), "relationship ended: a member deleted their account");
    }
    tracing::info!(user = %user.id, relationships = ended.len(), "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/users/me/voiceprint", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = VoiceprintStatus), (status = 401, body = ErrorBody)))]
pub async fn voiceprint_status(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<VoiceprintStatus>> {
    let updated_at = state.store.voiceprint_updated_at(user.id).await?;
    Ok(Json(VoiceprintStatus {
        enrolled: updated_at.is_some(),
        updated_at,
    }))
}

#[utoipa::path(delete, path = "/v1/users/me/voiceprint", tag = "users", security(("bearer" = [])),
    responses((status = 204, description = "removed (also when there was none)"), (status = 401, body = ErrorBody)))]
pub async fn delete_voiceprint(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<StatusCode> {
    state.store.delete_voiceprint(user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/users/me/voiceprint", tag = "users", security(("bearer" = [])),
    request_body(content = Vec<u8>, description = "3–60 s of the user's voice", content_type = "audio/wav"),
    responses((status = 200, body = VoiceprintEnrolled), (status = 401, body = ErrorBody),
        (status = 413, description = "over 60 s or 16 MiB", body = ErrorBody), (status = 415, description = "not audio/wav, audio/flac, audio/ogg or audio/mpeg", body = ErrorBody),
        (status = 422, description = "corrupt, too short, or no speech", body = ErrorBody),
        (status = 503, description = "no speaker model configured (`model_unavailable`)", body = ErrorBody)))]
pub async fn enrol_voiceprint(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<VoiceprintEnrolled>> {
    let codec = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Codec::from_mime)
        .filter(|c| *c != Codec::PcmS16le)
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "expected audio/wav, audio/flac, audio/ogg or audio/mpeg".into(),
            )
        })?;
    let print = state.enroller.enrol(codec, body).await?;
    let (seconds, quality) = (f64::from(print.seconds), f64::from(print.quality));
    state
        .store
        .put_voiceprint(user.id, &print.embedding, seconds, quality)
        .await?;
    tracing::info!(user = %user.id, seconds, quality, "voiceprint enrolled");
    Ok(Json(VoiceprintEnrolled {
        enrolled: true,
        seconds,
        quality,
    }))
}

pub(crate) fn speech_error(e: SpeechError) -> ApiError {
    match e {
        SpeechError::TooLarge(m) => ApiError::PayloadTooLarge(m),
        SpeechError::TooShort { .. } => ApiError::validation(format!(
            "recording too short: at least {MIN_SECONDS} s of speech needed"
        )),
        SpeechError::Unsupported(m) => ApiError::validation(format!("not decodable audio: {m}")),
        SpeechError::ModelMissing(_) | SpeechError::Config(_) | SpeechError::Model(_) => {
            ApiError::Unavailable("model_unavailable", e.to_string())
        }
        SpeechError::Io(_) | SpeechError::Resample(_) => ApiError::internal(e),
        other => ApiError::validation(other.to_string()),
    }
}
