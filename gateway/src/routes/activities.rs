//! `/v1/activities/suggestions`: activities chosen from a relationship's recent reports.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use inside_schemas::{Activity, ErrorBody};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::routes::require_member;
use crate::state::AppState;

/// Reports the suggestions look back over.
const LOOKBACK: u32 = 5;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/activities/suggestions", get(suggestions))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SuggestionParams {
    /// The relationship to suggest for.
    pub rid: Uuid,
}

#[utoipa::path(get, path = "/v1/activities/suggestions", tag = "activities", security(("bearer" = [])), params(SuggestionParams),
    responses((status = 200, body = Vec<Activity>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "missing or malformed rid", body = ErrorBody)))]
pub async fn suggestions(
    State(state): State<AppState>,
    user: AuthUser,
    Query(p): Query<SuggestionParams>,
) -> ApiResult<Json<Vec<Activity>>> {
    require_member(&state, p.rid, user.id).await?;
    let reports = state.store.recent_reports(p.rid, LOOKBACK).await?;
    Ok(Json(inside_engine::suggest_activities(&reports)))
}
