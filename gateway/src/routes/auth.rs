//! `/v1/auth`: signup, login, refresh-token rotation, logout.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use inside_schemas::{ErrorBody, LoginRequest, RefreshRequest, SignupRequest, TokenPair, User};
use inside_store::limiter::Hit;
use inside_store::tokens::Rotation;

use crate::auth::{hash_refresh_token, new_refresh_token};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, Json};
use crate::routes::login_throttle::{address_label, LoginThrottle};
use crate::routes::normalise_email;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/signup", post(signup))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
}

async fn token_pair(
    state: &AppState,
    user: User,
    family_token: Option<String>,
) -> ApiResult<TokenPair> {
    let refresh_token = match family_token {
        Some(t) => t,
        None => {
            let t = new_refresh_token();
            state
                .store
                .start_token_family(user.id, &hash_refresh_token(&t), refresh_expiry(state))
                .await?;
            t
        }
    };
    Ok(TokenPair {
        access_token: state.keys.issue(user.id)?,
        refresh_token,
        token_type: "bearer".into(),
        expires_in: state.keys.access_ttl.as_secs(),
        user,
    })
}

fn refresh_expiry(state: &AppState) -> i64 {
    inside_store::now_micros() + state.keys.refresh_ttl.as_micros() as i64
}

#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = TokenPair), (status = 400, body = ErrorBody), (status = 409, description = "email taken", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, description = "too many signups from this client address; see Retry-After", body = ErrorBody),
        (status = 503, description = "password hashing is queued to its bound; see Retry-After", body = ErrorBody)))]
pub async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<SignupRequest>,
) -> ApiResult<(StatusCode, Json<TokenPair>)> {
    let email = normalise_email(&req.email)?;
    // Before trimming: a trailing line break is refused, not silently dropped.
    crate::text::check_plain("name", &req.name)?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::validation("name must be 1 to 100 characters"));
    }
    if req.password.chars().count() < 8 || req.password.len() > 72 {
        return Err(ApiError::validation(
            "password must be at least 8 characters and at most 72 bytes",
        ));
    }
    // Counted before hashing, which is the cost a flood of signups imposes.
    let key = format!("signup:addr:{}", address_label(ip));
    let window = Duration::from_secs(state.settings.signup_window_seconds);
    let limit = u64::from(state.settings.signup_max_per_address);
    if let Hit::Limited(wait) = state.limiter.hit(&key, limit, window).await? {
        return Err(ApiError::RateLimited {
            retry_after_s: wait.as_secs(),
        });
    }
    let hash = match state.hasher.hash(&req.password).await {
        Ok(hash) => hash,
        Err(busy @ ApiError::Busy { .. }) => {
            // Turned away before any work: a polite retry must not use up the address's signups.
            state.limiter.release(&[&key]).await?;
            return Err(busy);
        }
        Err(e) => return Err(e),
    };
    let user = state
        .store
        .create_user(&email, name, &hash)
        .await
        .map_err(|e| match e {
            inside_store::StoreError::Conflict(_) => {
                ApiError::Conflict("email_taken", "email already registered".into())
            }
            other => other.into(),
        })?;
    tracing::info!(user = %user.id, "signed up");
    Ok((
        StatusCode::CREATED,
        Json(token_pair(&state, user, None).await?),
    ))
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 400, body = ErrorBody), (status = 401, description = "wrong email or password", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, description = "too many failed attempts from this client address; see Retry-After", body = ErrorBody),
        (status = 503, description = "password checks are queued to their bound; see Retry-After", body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<TokenPair>> {
    let email = req.email.trim().to_lowercase();
    let throttle = LoginThrottle::new(&state, &email, ip);
    // The attempt is counted before the password is checked, so concurrent
    // guesses cannot all pass a count that only failures would raise.
    throttle.admit().await?;
    let checked = check_password(&state, &email, &req.password).await;
    match checked {
        Ok(Some(user)) => {
            throttle.succeeded().await?;
            Ok(Json(token_pair(&state, user, None).await?))
        }
        Ok(None) => {
            throttle.failed().await?;
            Err(ApiError::Unauthorized(
                "invalid_credentials",
                "invalid email or password".into(),
            ))
        }
        Err(e) => {
            // Not a guess that was judged (busy, database down): it does not count.
            throttle.abandoned().await?;
            Err(e)
        }
    }
}

/// The user whose password this is, or `None` (unknown email or wrong password,
/// which take the same time).
async fn check_password(state: &AppState, email: &str, password: &str) -> ApiResult<Option<User>> {
    let creds = state.store.credentials(email).await?;
    let ok = state
        .hasher
        .verify(password, creds.as_ref().map(|c| c.password_hash.as_str()))
        .await?;
    Ok(creds.filter(|_| ok).map(|c| c.user))
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 400, body = ErrorBody),
        (status = 401, description = "unknown, expired or already-rotated token (reuse revokes the family)", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    let next = new_refresh_token();
    let outcome = state
        .store
        .rotate_refresh_token(
            &hash_refresh_token(&req.refresh_token),
            &hash_refresh_token(&next),
            refresh_expiry(&state),
        )
        .await?;
    match outcome {
        Rotation::Rotated { user_id, .. } => {
            let user = state.store.user(user_id).await?;
            Ok(Json(token_pair(&state, user, Some(next)).await?))
        }
        Rotation::Reused => {
            tracing::warn!("refresh token reused: token family revoked");
            Err(ApiError::Unauthorized(
                "token_reused",
                "refresh token was already used; please log in again".into(),
            ))
        }
        Rotation::Invalid => Err(ApiError::Unauthorized(
            "invalid_token",
            "refresh token is invalid or expired".into(),
        )),
    }
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "the token's family is revoked (also answered for an unknown token)"),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    state
        .store
        .revoke_family_of(&hash_refresh_token(&req.refresh_token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
