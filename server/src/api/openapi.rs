//! The OpenAPI document, assembled by `utoipa` from the `#[utoipa::path]` attributes of the
//! handlers that the router serves, and served at `/v1/openapi.json`.

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::App;

/// Title, version, and the bearer security scheme; the paths come from the routers.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(title = "sluice", description = "Multi-tenant network-flow export for Skydive"),
    modifiers(&BearerScheme),
    tags(
        (name = "tenants", description = "Tenants and their tokens (admin)"),
        (name = "pipelines", description = "A tenant's pipelines"),
        (name = "modules", description = "A tenant's WebAssembly modules"),
        (name = "admin", description = "Server-wide views (admin)"),
        (name = "health", description = "Liveness and readiness (no token), metrics"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the routes refer to.
#[derive(Debug)]
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document route.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", security(("bearer" = [])),
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(
    _: super::Caller,
    Extension(document): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*document).clone())
}
