//! The OpenAPI 3 document of `/api/*`, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{entities, network, queue, sync};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "tillmesh terminal API", description = "Management API of one tillmesh terminal. Every endpoint but /api/health needs `Authorization: Bearer <admin token>`. Errors: {\"error\":{\"code\",\"message\"}}."),
    modifiers(&BearerAuth),
    security(("admin_token" = [])),
    paths(
        entities::health, entities::put_entity, entities::get_entity, entities::delete_entity,
        entities::adjust_counter, entities::list, entities::batch,
        network::devices, network::pair,
        sync::progress, sync::now, sync::conflicts, sync::resolve, sync::digest,
        queue::list, queue::create, queue::stats, queue::retry, queue::cancel,
        queue::notifications, queue::ack, queue::events,
        document,
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
