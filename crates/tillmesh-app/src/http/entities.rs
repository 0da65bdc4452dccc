//! Entity endpoints (`/api/entities/…`) and health.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tillmesh_domain::{EntityKey, EntityOp, EntityState};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::SharedState;
use crate::services::entities::MAX_BATCH_OPS;

mod written;
pub use written::{BatchAnswer, EntityJson};

/// `GET /api/health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// This terminal's device id.
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// Server version.
    pub version: &'static str,
}

/// An entity as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct EntityDto {
    /// Entity type.
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Entity id.
    pub id: String,
    /// Visible fields (counters as integers).
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
    /// Tombstoned?
    pub deleted: bool,
    /// Vector clock: device id → counter.
    #[schema(value_type = Object)]
    pub version: Value,
    /// Ids of open conflicts on this entity.
    pub conflicts: Vec<String>,
}

impl EntityDto {
    /// From a key and state.
    pub fn new(key: &EntityKey, state: &EntityState) -> Self {
        let view = state.view();
        Self {
            entity_type: key.entity_type().to_string(),
            id: key.entity_id().to_string(),
            fields: view.fields,
            deleted: view.deleted,
            version: serde_json::to_value(&view.version).unwrap_or(Value::Null),
            conflicts: state.conflicts(key).into_iter().map(|c| c.id.0).collect(),
        }
    }
}

/// `PUT` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// Fields to set; `null` removes a field.
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
}

/// Counter body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CounterBody {
    /// Signed adjustment.
    pub delta: i64,
}

/// One batch op.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchOp {
    /// Set fields.
    Put {
        /// Entity type.
        #[serde(rename = "type")]
        entity_type: String,
        /// Entity id.
        id: String,
        /// Fields.
        #[schema(value_type = Object)]
        fields: serde_json::Map<String, Value>,
    },
    /// Tombstone.
    Delete {
        /// Entity type.
        #[serde(rename = "type")]
        entity_type: String,
        /// Entity id.
        id: String,
    },
    /// Adjust a counter.
    Counter {
        /// Entity type.
        #[serde(rename = "type")]
        entity_type: String,
        /// Entity id.
        id: String,
        /// Counter field.
        field: String,
        /// Signed adjustment.
        delta: i64,
    },
}

/// Batch body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// At most 10,000 ops, applied all or none.
    pub ops: Vec<BatchOp>,
}

/// Batch result.
#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    /// Ops applied.
    pub applied: usize,
    /// Resulting entities, in op order.
    pub entities: Vec<EntityDto>,
}

/// List query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (1-1000, default 100).
    pub limit: Option<usize>,
    /// Return ids after this one.
    pub after: Option<String>,
}

/// A page of entities.
#[derive(Serialize, ToSchema)]
pub struct EntityPage {
    /// Entities ordered by id.
    pub entities: Vec<EntityDto>,
    /// Id to pass as `after` for the next page, or null at the end.
    pub next: Option<String>,
}

fn put_op(fields: serde_json::Map<String, Value>) -> EntityOp {
    let fields: BTreeMap<String, Option<Value>> =
        fields.into_iter().map(|(k, v)| (k, if v.is_null() { None } else { Some(v) })).collect();
    EntityOp::Put { fields }
}

async fn apply_one(state: &SharedState, key: EntityKey, op: EntityOp) -> Result<Json<EntityDto>, ApiError> {
    let outcome = state.entities.apply(vec![(key, op)]).await?;
    let (key, entity, _) = outcome.entities.into_iter().next().ok_or_else(|| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "write returned nothing")
    })?;
    Ok(Json(EntityDto::new(&key, &entity)))
}

/// Terminal health and identity.
#[utoipa::path(get, path = "/api/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<SharedState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        device_id: state.device_id.to_string(),
        name: state.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Sets fields of an entity (other fields keep their values).
#[utoipa::path(put, path = "/api/entities/{entity_type}/{entity_id}", tag = "entities",
    params(("entity_type" = String, Path), ("entity_id" = String, Path)), request_body = PutBody,
    responses((status = 200, body = EntityDto), (status = 400), (status = 409, description = "field_kind_mismatch")))]
pub async fn put_entity(
    State(state): State<SharedState>,
    ApiPath((t, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutBody>,
) -> Result<Json<EntityDto>, ApiError> {
    let key = EntityKey::new(t, id)?;
    apply_one(&state, key, put_op(body.fields)).await
}

/// One entity.
#[utoipa::path(get, path = "/api/entities/{entity_type}/{entity_id}", tag = "entities",
    params(("entity_type" = String, Path), ("entity_id" = String, Path)),
    responses((status = 200, body = EntityDto), (status = 404)))]
pub async fn get_entity(
    State(state): State<SharedState>,
    ApiPath((t, id)): ApiPath<(String, String)>,
) -> Result<Json<EntityDto>, ApiError> {
    let key = EntityKey::new(t, id)?;
    let entity = state
        .entities
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("entity {key} was never written")))?;
    Ok(Json(EntityDto::new(&key, &entity)))
}

/// Tombstones an entity.
#[utoipa::path(delete, path = "/api/entities/{entity_type}/{entity_id}", tag = "entities",
    params(("entity_type" = String, Path), ("entity_id" = String, Path)),
    responses((status = 200, body = EntityDto), (status = 404)))]
pub async fn delete_entity(
    State(state): State<SharedState>,
    ApiPath((t, id)): ApiPath<(String, String)>,
) -> Result<Json<EntityDto>, ApiError> {
    let key = EntityKey::new(t, id)?;
    if state.entities.get(&key).await?.is_none() {
        return Err(ApiError::not_found(format!("entity {key} was never written")));
    }
    apply_one(&state, key, EntityOp::Delete).await
}

/// Adjusts a counter field (stock).
#[utoipa::path(post, path = "/api/entities/{entity_type}/{entity_id}/counters/{field}", tag = "entities",
    params(("entity_type" = String, Path), ("entity_id" = String, Path), ("field" = String, Path)),
    request_body = CounterBody,
    responses((status = 200, body = EntityDto), (status = 409, description = "field_kind_mismatch"), (status = 422, description = "counter_overflow")))]
pub async fn adjust_counter(
    State(state): State<SharedState>,
    ApiPath((t, id, field)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<CounterBody>,
) -> Result<Json<EntityDto>, ApiError> {
    let key = EntityKey::new(t, id)?;
    apply_one(&state, key, EntityOp::Counter { field, delta: body.delta }).await
}

/// Entities of one type, ordered by id.
#[utoipa::path(get, path = "/api/entities/{entity_type}", tag = "entities",
    params(("entity_type" = String, Path), ListQuery), responses((status = 200, body = EntityPage)))]
pub async fn list(
    State(state): State<SharedState>,
    ApiPath(t): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<EntityPage>, ApiError> {
    tillmesh_domain::ids::validate_name("entity type", &t)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit must be between 1 and 1000"));
    }
    if let Some(a) = &q.after {
        tillmesh_domain::ids::validate_name("entity id", a)?;
    }
    // One extra row tells whether another page follows.
    let mut rows = state.entities.list(&t, q.after, limit + 1).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(|(k, _)| k.entity_id().to_string()) } else { None };
    Ok(Json(EntityPage { entities: rows.iter().map(|(k, s)| EntityDto::new(k, s)).collect(), next }))
}

/// Applies up to 10,000 ops atomically: all or none.
#[utoipa::path(post, path = "/api/entities/batch", tag = "entities", request_body = BatchBody,
    responses((status = 200, body = BatchResult), (status = 400), (status = 409), (status = 413)))]
pub async fn batch(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<Json<BatchAnswer>, ApiError> {
    if body.ops.len() > MAX_BATCH_OPS {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("a batch holds at most {MAX_BATCH_OPS} ops, this one {}", body.ops.len()),
        ));
    }
    let mut ops = Vec::with_capacity(body.ops.len());
    for (i, op) in body.ops.into_iter().enumerate() {
        let (key, op) = match op {
            BatchOp::Put { entity_type, id, fields } => (EntityKey::new(entity_type, id), put_op(fields)),
            BatchOp::Delete { entity_type, id } => (EntityKey::new(entity_type, id), EntityOp::Delete),
            BatchOp::Counter { entity_type, id, field, delta } => {
                (EntityKey::new(entity_type, id), EntityOp::Counter { field, delta })
            }
        };
        let key = key.map_err(|e| prefix(i, e.into()))?;
        op.validate().map_err(|e| prefix(i, e.into()))?;
        ops.push((key, op));
    }
    let outcome = state.entities.apply(ops).await?;
    Ok(Json(BatchAnswer(outcome.entities)))
}

fn prefix(i: usize, mut e: ApiError) -> ApiError {
    e.message = format!("op {i}: {}", e.message);
    e
}
