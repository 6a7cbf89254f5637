//! The OpenAPI document, generated from the handlers' annotations; `docs` serves it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Inside API", description = "Realtime communication coaching. Errors are always `{\"error\": {\"code\", \"message\", \"details\"}}`. \
        A non-member asking for a relationship, session or its pokes gets 404, as for an id that does not exist. \
        415 answers a JSON endpoint called without `Content-Type: application/json`."),
    paths(
        routes::auth::signup, routes::auth::login, routes::auth::refresh, routes::auth::logout,
        routes::users::me, routes::users::delete_me, routes::users::voiceprint_status, routes::users::enrol_voiceprint, routes::users::delete_voiceprint,
        routes::relationships::create, routes::relationships::list, routes::relationships::set_consent, routes::relationships::set_research_consent,
        routes::sessions::create, routes::sessions::read, routes::sessions::finalize, routes::sessions::report,
        routes::history::sessions, routes::activities::suggestions,
        routes::pokes::create, routes::pokes::list,
        routes::health::health, routes::health::livez, routes::health::readyz, routes::health::metrics,
    ),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "users"), (name = "relationships"), (name = "sessions"), (name = "activities"), (name = "pokes"), (name = "ops"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
