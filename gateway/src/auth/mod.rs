//! Authentication: access tokens (JWT), refresh tokens, password hashing, and
//! the `AuthUser` extractor that guards every `/v1` route but auth.

mod password;
mod tokens;

pub use password::{HasherPool, PasswordHasher};
pub use tokens::{hash_refresh_token, new_refresh_token, TokenKeys};

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
        let id = state.keys.verify(token.trim())?;
        Ok(AuthUser { id })
    }
}
