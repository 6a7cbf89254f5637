//! Extractors that turn axum's rejections into `ApiError`, and the client
//! address used by login throttling.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// `axum::Json` whose rejections share the API's error shape, and which
/// refuses a NUL (`\u0000`) in any string of the body with 422 before any
/// handler sees it: one check for every JSON route, instead of a 500 from
/// PostgreSQL wherever such a string would reach the database.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // axum's own extractor checks the content type, the body limit and the syntax.
        let axum::Json(raw) = axum::Json::<Box<RawValue>>::from_request(req, state).await?;
        if crate::text::has_nul_escape(raw.get().as_bytes()) {
            return Err(ApiError::validation(format!(
                "{} must not contain NUL characters (\\u0000)",
                crate::text::nul_field(raw.get())
            )));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(raw.get().as_bytes())?;
        Ok(Json(value))
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The peer address; `None` in tests driven through `oneshot`.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}
