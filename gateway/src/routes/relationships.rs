//! `/v1/relationships`: create (and invite), list, consent, research consent.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::Router;
use inside_schemas::{ConsentStatus, ConsentUpdate, CreateRelationship, ErrorBody, Relationship};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::mail::Invitation;
use crate::routes::{normalise_email, require_member};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/relationships", get(list).post(create))
        .route("/v1/relationships/{rid}/consent/{uid}", put(set_consent))
        .route(
            "/v1/relationships/{rid}/research/{uid}",
            put(set_research_consent),
        )
}

#[utoipa::path(post, path = "/v1/relationships", tag = "relationships", security(("bearer" = [])), request_body = CreateRelationship,
    responses((status = 201, body = Relationship), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, description = "bad email, own email, or unknown kind", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<CreateRelationship>,
) -> ApiResult<(StatusCode, Json<Relationship>)> {
    let partner = normalise_email(&req.partner_email)?;
    let me = state
        .store
        .user(user.id)
        .await
        .map_err(|_| ApiError::unauthorized("user no longer exists"))?;
    if partner == me.email {
        return Err(ApiError::validation(
            "partner_email must be someone else's address",
        ));
    }
    let rel = state
        .store
        .create_relationship(user.id, &me.email, &partner, req.kind)
        .await?;
    let invitation = Invitation {
        to: partner,
        inviter_name: me.name,
        relationship_kind: serde_json::to_value(req.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    // Mail is slow and may fail: the relationship exists either way.
    let mailer = state.mailer.clone();
    tokio::spawn(async move {
        if let Err(e) = mailer.send_invitation(&invitation).await {
            tracing::warn!(error = %e, "sending the invitation failed");
        }
    });
    Ok((StatusCode::CREATED, Json(rel)))
}

#[utoipa::path(get, path = "/v1/relationships", tag = "relationships", security(("bearer" = [])),
    responses((status = 200, body = Vec<Relationship>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<Relationship>>> {
    Ok(Json(state.store.relationships_of(user.id).await?))
}

#[utoipa::path(put, path = "/v1/relationships/{rid}/consent/{uid}", tag = "relationships", security(("bearer" = [])),
    params(("rid" = Uuid, Path), ("uid" = Uuid, Path)), request_body = ConsentUpdate,
    responses((status = 200, body = Relationship), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "only a member may change their own consent", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_consent(
    State(state): State<AppState>,
    user: AuthUser,
    Path((rid, uid)): Path<(Uuid, Uuid)>,
    Json(req): Json<ConsentUpdate>,
) -> ApiResult<Json<Relationship>> {
    require_member(&state, rid, user.id).await?;
    if uid != user.id {
        return Err(ApiError::Forbidden(
            "forbidden",
            "only a member may change their own consent".into(),
        ));
    }
    let status: ConsentStatus = req.status.into();
    let rel = state.store.set_consent(rid, uid, status).await?;
    if status != ConsentStatus::Granted {
        // the member's open sockets of running sessions close with 4403
        state.expel_member(rid, uid).await?;
    }
    state.research.forget_relationship(rid);
    Ok(Json(rel))
}

#[utoipa::path(put, path = "/v1/relationships/{rid}/research/{uid}", tag = "relationships", security(("bearer" = [])),
    params(("rid" = Uuid, Path), ("uid" = Uuid, Path)), request_body = ConsentUpdate,
    description = "Sets the member's research use (`research_consent`, `pending` until decided). A session's frames, \
        audio segments and speaker events are copied to the research subjects (`inside.v1.research.…`) only while every \
        member has granted both consent and research use; revoking stops the copies (on another gateway within 2 s).",
    responses((status = 200, body = Relationship), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "only a member may change their own research use", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_research_consent(
    State(state): State<AppState>,
    user: AuthUser,
    Path((rid, uid)): Path<(Uuid, Uuid)>,
    Json(req): Json<ConsentUpdate>,
) -> ApiResult<Json<Relationship>> {
    require_member(&state, rid, user.id).await?;
    if uid != user.id {
        return Err(ApiError::Forbidden(
            "forbidden",
            "only a member may change their own research use".into(),
        ));
    }
    let rel = state
        .store
        .set_research_consent(rid, uid, req.status.into())
        .await?;
    // this gateway (and, embedded, the pipeline) decides from the new value at once
    state.research.forget_relationship(rid);
    tracing::info!(%rid, %uid, research = ?req.status, "research use changed");
    Ok(Json(rel))
}
