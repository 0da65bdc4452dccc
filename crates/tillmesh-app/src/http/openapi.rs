//! The OpenAPI 3 document of `/api/*`, generated from the handlers' annotations.

use axum::Json;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{entities, network, pairing, queue, sync};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token (data dir: admin-token): every endpoint."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "app_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The app token for till apps (data dir: app-token): entities, events and this document; 403 elsewhere.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "tillmesh terminal API", description = "Management API of one tillmesh terminal. Every endpoint but /api/health needs `Authorization: Bearer <token>`: the admin token may call everything; the app token (for till apps) may call /api/entities/*, /api/events and /api/openapi.json, and gets 403 elsewhere. The admin token is accepted from the terminal itself (loopback) only, unless it was started with --remote-admin (403 remote_admin_disabled). Errors: {\"error\":{\"code\",\"message\"}}."),
    modifiers(&BearerAuth),
    security(("admin_token" = [])),
    paths(
        entities::health, entities::put_entity, entities::get_entity, entities::delete_entity,
        entities::adjust_counter, entities::list, entities::batch,
        network::devices, network::pair, pairing::pairing_code,
        sync::progress, sync::now, sync::conflicts, sync::resolve, sync::digest,
        queue::list, queue::create, queue::stats, queue::retry, queue::cancel,
        queue::notifications, queue::ack, queue::events,
        document,
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn document() -> Json<Value> {
    Json(completed(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()))
}

/// Statuses every authenticated operation can answer with the JSON error shape.
const ERROR_STATUSES: &[(&str, &str)] = &[
    ("400", "Malformed input: bad JSON, wrong types, invalid names"),
    ("401", "Missing or wrong token"),
    ("404", "Unknown id or route"),
    ("409", "Conflicting state (e.g. field_kind_mismatch)"),
    ("413", "Body or batch too large"),
    ("415", "Body is not application/json"),
    ("422", "Well-formed but unacceptable (e.g. counter_overflow)"),
];

/// Whether the app token may call `path` (keep in step with `http.rs`'s app routes).
fn app_route(path: &str) -> bool {
    path.starts_with("/api/entities") || path == "/api/events" || path == "/api/openapi.json"
}

/// Adds what the handler annotations leave implicit, in one place so it cannot
/// drift: the error responses and their JSON shape, the name patterns of path
/// parameters, and the open health endpoint.
fn completed(mut doc: Value) -> Value {
    let error_ref = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else { continue };
            for (method, op) in ops.iter_mut() {
                let Some(op) = op.as_object_mut() else { continue };
                if path == "/api/health" {
                    op.insert("security".into(), json!([]));
                } else if app_route(path) {
                    op.insert("security".into(), json!([{"admin_token": []}, {"app_token": []}]));
                } else {
                    op.insert("security".into(), json!([{"admin_token": []}]));
                    if let Some(r) = op.get_mut("responses").and_then(Value::as_object_mut) {
                        r.entry("403")
                            .or_insert_with(|| json!({"description": "The app token: this needs the admin token"}));
                    }
                }
                if path != "/api/health" {
                    let responses = op.entry("responses").or_insert_with(|| json!({}));
                    if let Some(r) = responses.as_object_mut() {
                        for (status, text) in ERROR_STATUSES {
                            let takes_body = matches!(method.as_str(), "post" | "put" | "patch");
                            if (*status == "415" || *status == "413") && !takes_body {
                                continue;
                            }
                            r.entry(*status).or_insert_with(|| json!({"description": text}));
                        }
                        for (status, resp) in r.iter_mut() {
                            if status.starts_with('4') || status.starts_with('5') {
                                resp["content"] = error_ref.clone();
                            }
                        }
                    }
                }
                if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                    for p in params {
                        let name = p["name"].as_str().unwrap_or_default();
                        if matches!(name, "entity_type" | "entity_id" | "field") {
                            p["schema"] = json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"});
                        }
                    }
                }
            }
        }
    }
    doc["components"]["schemas"]["ErrorBody"] = json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
        }}
    });
    doc
}
