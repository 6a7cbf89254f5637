//! `/v1/history/sessions`: the caller's sessions, newest first, keyset-paginated.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use inside_schemas::{ErrorBody, HistoryPage};
use serde::Deserialize;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::routes::{page_cursor, page_limit};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/history/sessions", get(sessions))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    /// 1..=100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^-?[0-9]{1,18}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/history/sessions", tag = "sessions", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = HistoryPage), (status = 401, body = ErrorBody), (status = 422, description = "bad limit or cursor", body = ErrorBody)))]
pub async fn sessions(
    State(state): State<AppState>,
    user: AuthUser,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<HistoryPage>> {
    let limit = page_limit(p.limit)?;
    let before = page_cursor(p.cursor.as_deref())?;
    let (items, next_cursor) = state.store.history(user.id, limit, before).await?;
    Ok(Json(HistoryPage { items, next_cursor }))
}
