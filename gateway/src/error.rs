//! The one error type of the HTTP API. Every failure, axum's own rejections
//! included, leaves as `{"error": {"code", "message", "details"}}` with the
//! status of API.md.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use inside_schemas::ErrorBody;
use inside_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// 400 with its own code: a query parameter that is not what the route takes.
    #[error("{1}")]
    BadParameter(&'static str, String),
    #[error("{1}")]
    Unauthorized(&'static str, String),
    #[error("{1}")]
    Forbidden(&'static str, String),
    #[error("{0}")]
    NotFound(String),
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Validation(String),
    #[error("too many requests")]
    RateLimited { retry_after_s: u64 },
    /// 429 with its own code, for a limit on what is held open rather than a rate.
    #[error("{1}")]
    TooMany(&'static str, String),
    #[error("{1}")]
    Unavailable(&'static str, String),
    /// Overloaded (e.g. the password hashing queue is full): 503 `busy` with `Retry-After`.
    #[error("the server is busy; retry shortly")]
    Busy { retry_after_s: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::Unauthorized("unauthorized", message.into())
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::Validation(message.into())
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::BadParameter(code, _) => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(code, _) => (StatusCode::UNAUTHORIZED, code),
            ApiError::Forbidden(code, _) => (StatusCode::FORBIDDEN, code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(code, _) => (StatusCode::CONFLICT, code),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::TooMany(code, _) => (StatusCode::TOO_MANY_REQUESTS, code),
            ApiError::Unavailable(code, _) => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            ApiError::Internal(detail) => {
                // The detail may hold SQL or paths: log it, never send it.
                tracing::error!(error = %detail, "request failed");
                "internal server error".to_string()
            }
            other => other.to_string(),
        };
        let mut res = (status, axum::Json(ErrorBody::new(code, message))).into_response();
        if let ApiError::RateLimited { retry_after_s } | ApiError::Busy { retry_after_s } = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(m) => ApiError::Conflict("conflict", m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Validation(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected `Content-Type: application/json`".into())
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("request body over the limit".into())
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        // A malformed id names nothing that exists.
        ApiError::NotFound("not found".into())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::Validation(r.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Why the gateway could not start, or an operator's command (`gateway report rerun`) could
/// not finish: which step, and the error underneath.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] inside_settings::SettingsError),
    #[error("{step}: {source}")]
    Store {
        step: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("{step}: {source}")]
    Bus {
        step: &'static str,
        #[source]
        source: inside_bus::BusError,
    },
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no session {0}")]
    NoSession(uuid::Uuid),
    #[error("session {0}: {1}")]
    NotRerunnable(uuid::Uuid, String),
    #[error("password hashing: {0}")]
    Hasher(ApiError),
    #[error(transparent)]
    Mail(#[from] crate::mail::MailError),
}

impl StartupError {
    pub(crate) fn store(step: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |source| StartupError::Store { step, source }
    }

    pub(crate) fn bus(step: &'static str) -> impl FnOnce(inside_bus::BusError) -> Self {
        move |source| StartupError::Bus { step, source }
    }
}
