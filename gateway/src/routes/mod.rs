//! One router per area of the API.

pub mod activities;
pub mod auth;
pub mod health;
pub mod history;
pub mod login_throttle;
pub mod pokes;
pub mod relationships;
pub mod sessions;
pub mod users;

use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// 404 unless `user` belongs to relationship `rid`: non-members may not learn it exists.
pub(crate) async fn require_member(state: &AppState, rid: Uuid, user: Uuid) -> ApiResult<()> {
    if state.store.is_member(rid, user).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("relationship"))
    }
}

/// Checks and trims an email: lower case, one `@`, non-empty parts, no spaces.
pub(crate) fn normalise_email(raw: &str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && !domain.is_empty()
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::validation("email is not a valid address"))
    }
}

/// Page size: default 20, 1..=100.
pub(crate) fn page_limit(limit: Option<i64>) -> ApiResult<u32> {
    match limit {
        None => Ok(20),
        Some(n @ 1..=100) => Ok(n as u32),
        Some(_) => Err(ApiError::validation("limit must be between 1 and 100")),
    }
}

pub(crate) fn page_cursor(cursor: Option<&str>) -> ApiResult<Option<(i64, String)>> {
    cursor
        .map(|c| {
            inside_store::decode_cursor(c)
                .ok_or_else(|| ApiError::validation("cursor is not valid"))
        })
        .transpose()
}
