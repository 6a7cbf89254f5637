//! Authentication: access tokens (JWT), refresh tokens, password hashing, and
//! the `AuthUser` extractor that guards every `/v1` route but auth.

mod accounts;
mod password;
mod tokens;

pub use accounts::{LiveAccounts, ALIVE_FOR};
pub use password::{HasherPool, PasswordHasher};
pub use tokens::{hash_refresh_token, new_refresh_token, Access, TokenKeys};

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The caller, proven by a valid bearer access token.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: Uuid,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| ApiError::unauthorized("malformed Authorization header"))?;
        let id = authenticate(state, token.trim()).await?;
        Ok(AuthUser { id })
    }
}

/// The account a bearer access token proves, 401 when the token is bad or
/// the account no longer exists (REST and the WebSocket upgrade alike).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Uuid, ApiError> {
    let id = state.keys.verify(token)?;
    state.accounts.require(&state.store, id).await?;
    Ok(id)
}
