//! `/v1/relationships`: create (and invite), list, consent, research consent.
//!
//! Creating a relationship tells the creator nothing about the address they
//! typed: until the invited member answers (grants or revokes consent), the
//! other members see them only as that address, with `user_id` and `name`
//! null, whether or not an account exists for it. Invitations are limited per
//! sender and per receiving address.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::Router;
use inside_schemas::{ConsentStatus, ConsentUpdate, CreateRelationship, ErrorBody, Relationship};
use inside_store::limiter::Hit;
use sha2::{Digest, Sha256};
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
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, description = "bad email, own email, or unknown kind", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many invitations from this account or to this address (INVITATION_*); see Retry-After", body = ErrorBody)),
    description = "Creates the relationship and emails an invitation. The answer is the same whether or not the address has an account: the invited member has `user_id` and `name` null until they answer the invitation.")]
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
    limit_invitations(&state, user.id, &partner).await?;
    let rel = state
        .store
        .create_relationship(user.id, &me.email, &partner, req.kind)
        .await?;
    let invitation = Invitation {
        relationship_id: rel.id,
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
    Ok((StatusCode::CREATED, Json(seen_by(rel, user.id))))
}

/// Counts one invitation from `sender` and one to `address` (hashed: the
/// limiter's keys, in Redis too, never hold an address); 429 over either.
async fn limit_invitations(state: &AppState, sender: Uuid, address: &str) -> ApiResult<()> {
    let s = &state.settings;
    let window = Duration::from_secs(s.invitation_window_seconds);
    let address_key = hex::encode(&Sha256::digest(address.as_bytes())[..16]);
    for (key, limit) in [
        (format!("invite:from:{sender}"), s.invitation_sender_limit),
        (
            format!("invite:to:{address_key}"),
            s.invitation_address_limit,
        ),
    ] {
        if let Hit::Limited(wait) = state.limiter.hit(&key, u64::from(limit), window).await? {
            return Err(ApiError::RateLimited {
                retry_after_s: wait.as_secs(),
            });
        }
    }
    Ok(())
}

/// `rel` as `viewer` may see it: an invited member (any but the creator, who
/// is first) who has not answered yet shows no account id and no name, so
/// that inviting an address does not reveal whether it has an account.
pub(crate) fn seen_by(mut rel: Relationship, viewer: Uuid) -> Relationship {
    for m in rel.members.iter_mut().skip(1) {
        if m.consent == ConsentStatus::Pending && m.user_id != Some(viewer) {
            m.user_id = None;
            m.name = None;
        }
    }
    rel
}

#[utoipa::path(get, path = "/v1/relationships", tag = "relationships", security(("bearer" = [])),
    description = "The caller's relationships, newest first. An invited member who has not answered (consent `pending`) shows `user_id` and `name` null to the other members.",
    responses((status = 200, body = Vec<Relationship>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<Relationship>>> {
    let all = state.store.relationships_of(user.id).await?;
    Ok(Json(all.into_iter().map(|r| seen_by(r, user.id)).collect()))
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
    require_own_choice(&state, rid, uid, user, "consent").await?;
    let status: ConsentStatus = req.status.into();
    let rel = state.store.set_consent(rid, uid, status).await?;
    if status != ConsentStatus::Granted {
        // the member's open sockets of running sessions close with 4403
        state.expel_member(rid, uid).await?;
    }
    state.research.forget_relationship(rid);
    Ok(Json(seen_by(rel, user.id)))
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
    require_own_choice(&state, rid, uid, user, "research use").await?;
    let rel = state
        .store
        .set_research_consent(rid, uid, req.status.into())
        .await?;
    // this gateway (and, embedded, the pipeline) decides from the new value at once
    state.research.forget_relationship(rid);
    tracing::info!(%rid, %uid, research = ?req.status, "research use changed");
    Ok(Json(seen_by(rel, user.id)))
}

/// A member changes only their own consent or research use: 404 for a non-member (as for an
/// unknown relationship), 403 for someone else's choice.
async fn require_own_choice(
    state: &AppState,
    rid: Uuid,
    uid: Uuid,
    user: AuthUser,
    what: &str,
) -> ApiResult<()> {
    require_member(state, rid, user.id).await?;
    if uid != user.id {
        return Err(ApiError::Forbidden(
            "forbidden",
            format!("only a member may change their own {what}"),
        ));
    }
    Ok(())
}
