//! The API documentation the gateway serves: `/docs` (Swagger UI over `/openapi.json`, its
//! assets embedded in the binary so the page works offline), `/openapi.json`, and the
//! AsyncAPI pages, all behind security headers that let a docs page load nothing from
//! another origin and be framed by nobody.

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::{asyncapi, openapi};

/// Same-origin only. Swagger UI sets inline `style` attributes and draws its icons from
/// `data:` URIs, so those two are allowed; scripts come only from the embedded files (its
/// `index.html` has no inline script, and its config is served as `swagger-initializer.js`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// `/docs` (and the assets under `/docs/`), `/openapi.json`, `/asyncapi`, `/asyncapi.json`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // the spec is served by the route below, not by Swagger UI's own copy: one document
    let config = Config::new(["/openapi.json"])
        // the default validator badge would load an image from validator.swagger.io
        .validator_url("none");
    let swagger: Router<S> = SwaggerUi::new("/docs").config(config).into();
    swagger
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(openapi::ApiDoc::openapi()) }),
        )
        .merge(asyncapi::router())
        .layer(axum::middleware::map_response(secure))
}

/// Adds the security headers to a docs response.
async fn secure(mut res: Response) -> Response {
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}
