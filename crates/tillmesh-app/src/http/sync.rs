//! Sync endpoints: progress, sync now, conflicts and their resolution, digest.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tillmesh_domain::{ConflictId, EntityOp};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson};
use super::SharedState;
use crate::terminal::device_of_writer;
use crate::timefmt::rfc3339;

/// Offline-queue counts.
#[derive(Serialize, ToSchema)]
pub struct QueueCounts {
    /// Waiting.
    pub pending: u64,
    /// Being attempted.
    pub processing: u64,
    /// Delivered.
    pub completed: u64,
    /// Given up.
    pub failed: u64,
}

/// One peer's sync state.
#[derive(Serialize, ToSchema)]
pub struct PeerProgress {
    /// Peer id.
    pub device_id: String,
    /// Peer name.
    pub name: String,
    /// Liveness.
    pub status: &'static str,
    /// Last successful sync.
    pub last_sync: Option<String>,
    /// Changes the peer has that this terminal has not pulled yet (as last reported).
    pub pending_changes: u64,
    /// Error of the last attempt.
    pub last_error: Option<String>,
}

/// `GET /api/sync/progress`.
#[derive(Serialize, ToSchema)]
pub struct Progress {
    /// Most recent successful sync with any peer.
    pub last_sync: Option<String>,
    /// A sync is running.
    pub in_progress: bool,
    /// Sum of peers' pending changes.
    pub pending_changes: u64,
    /// Per peer.
    pub peers: Vec<PeerProgress>,
    /// Offline-queue counts.
    pub offline_queue: QueueCounts,
}

/// Sync progress.
#[utoipa::path(get, path = "/api/sync/progress", tag = "sync", responses((status = 200, body = Progress)))]
pub async fn progress(State(state): State<SharedState>) -> Result<Json<Progress>, ApiError> {
    let states: BTreeMap<_, _> =
        state.store.peer_states().await?.into_iter().map(|s| (s.device_id.clone(), s)).collect();
    let devices = state.network.devices().await?;
    let mut peers = Vec::new();
    for d in devices.iter().filter(|d| d.record.device_id != state.device_id) {
        let s = states.get(&d.record.device_id);
        peers.push(PeerProgress {
            device_id: d.record.device_id.to_string(),
            name: d.record.name.clone(),
            status: d.status.as_str(),
            last_sync: s.and_then(|s| s.last_sync).map(rfc3339),
            pending_changes: s.map_or(0, |s| s.peer_head.saturating_sub(s.cursor)),
            last_error: s.and_then(|s| s.last_error.clone()),
        });
    }
    let q = state.queue.stats().await?;
    Ok(Json(Progress {
        last_sync: states.values().filter_map(|s| s.last_sync).max().map(rfc3339),
        in_progress: state.sync.in_progress(),
        pending_changes: peers.iter().map(|p| p.pending_changes).sum(),
        peers,
        offline_queue: QueueCounts {
            pending: q.pending,
            processing: q.processing,
            completed: q.completed,
            failed: q.failed,
        },
    }))
}

/// One peer's result of `sync/now`.
#[derive(Serialize, ToSchema)]
pub struct SyncNowPeer {
    /// Peer id.
    pub device_id: String,
    /// Changes pulled.
    pub pulled: u64,
    /// Error, if the sync stopped early.
    pub error: Option<String>,
}

/// `POST /api/sync/now` result.
#[derive(Serialize, ToSchema)]
pub struct SyncNow {
    /// Per peer.
    pub peers: Vec<SyncNowPeer>,
}

/// Runs one sync round with every online trusted peer now.
#[utoipa::path(post, path = "/api/sync/now", tag = "sync", responses((status = 200, body = SyncNow)))]
pub async fn now(State(state): State<SharedState>) -> Result<Json<SyncNow>, ApiError> {
    let results = state.sync.sync_round().await?;
    Ok(Json(SyncNow {
        peers: results
            .into_iter()
            .map(|r| SyncNowPeer { device_id: r.device_id.to_string(), pulled: r.pulled, error: r.error })
            .collect(),
    }))
}

/// A competing value.
#[derive(Serialize, ToSchema)]
pub struct ConflictValueDto {
    /// The value.
    #[schema(value_type = Object)]
    pub value: Value,
    /// Device that wrote it.
    pub device_id: String,
    /// The run of that device that wrote it (`<device_id>.<incarnation>`).
    pub writer: String,
    /// When (RFC 3339).
    pub at: String,
}

/// An open conflict.
#[derive(Serialize, ToSchema)]
pub struct ConflictDto {
    /// Stable id, the same on every terminal.
    pub id: String,
    /// Entity type.
    pub entity_type: String,
    /// Entity id.
    pub entity_id: String,
    /// Field.
    pub field: String,
    /// Competing values.
    pub values: Vec<ConflictValueDto>,
    /// Value shown meanwhile.
    #[schema(value_type = Object)]
    pub provisional: Value,
    /// When the latest competing write was made (RFC 3339).
    pub detected_at: String,
}

/// Conflict list.
#[derive(Serialize, ToSchema)]
pub struct ConflictList {
    /// Open conflicts.
    pub conflicts: Vec<ConflictDto>,
}

/// Open conflicts.
#[utoipa::path(get, path = "/api/sync/conflicts", tag = "sync", responses((status = 200, body = ConflictList)))]
pub async fn conflicts(State(state): State<SharedState>) -> Result<Json<ConflictList>, ApiError> {
    let list = state.store.open_conflicts().await?;
    Ok(Json(ConflictList {
        conflicts: list
            .into_iter()
            .map(|c| ConflictDto {
                id: c.id.0.clone(),
                entity_type: c.key.entity_type().to_string(),
                entity_id: c.key.entity_id().to_string(),
                field: c.field.clone(),
                detected_at: rfc3339(c.values.iter().map(|v| v.at).max().unwrap_or_default()),
                values: c
                    .values
                    .iter()
                    .map(|v| ConflictValueDto {
                        value: v.value.clone(),
                        device_id: device_of_writer(v.device_id.as_str()).to_string(),
                        writer: v.device_id.to_string(),
                        at: rfc3339(v.at),
                    })
                    .collect(),
                provisional: c.provisional,
            })
            .collect(),
    }))
}

/// Resolution request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// Conflict id.
    pub conflict_id: String,
    /// `local`, `remote` or `custom`.
    pub resolution: String,
    /// The value, for `custom`.
    #[schema(value_type = Object)]
    pub value: Option<Value>,
}

/// Resolution result.
#[derive(Serialize, ToSchema)]
pub struct Resolved {
    /// Conflict id.
    pub conflict_id: String,
    /// The value now in place.
    #[schema(value_type = Object)]
    pub value: Value,
}

/// Resolves a conflict with a new write that supersedes the competing ones.
#[utoipa::path(post, path = "/api/sync/conflicts/resolve", tag = "sync", request_body = ResolveBody,
    responses((status = 200, body = Resolved), (status = 400), (status = 404), (status = 409, description = "several remote values compete")))]
pub async fn resolve(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<Resolved>, ApiError> {
    let conflict =
        state.store.conflict(&ConflictId(body.conflict_id.clone())).await?.ok_or_else(|| {
            ApiError::not_found(format!("no open conflict {:?} (already resolved?)", body.conflict_id))
        })?;
    let value = match body.resolution.as_str() {
        "local" => conflict.provisional.clone(),
        "remote" => {
            let others = conflict.other_values(&conflict.provisional);
            match others.as_slice() {
                [one] => one.clone(),
                [] => conflict.provisional.clone(),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "ambiguous_remote",
                        format!("{} other values compete; choose one with resolution \"custom\"", others.len()),
                    ))
                }
            }
        }
        "custom" => match body.value {
            Some(v) if !v.is_null() => v,
            _ => return Err(ApiError::bad_request("invalid_body", "resolution \"custom\" needs a non-null \"value\"")),
        },
        other => {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("resolution must be local, remote or custom, not {other:?}"),
            ))
        }
    };
    let op = EntityOp::Put { fields: BTreeMap::from([(conflict.field.clone(), Some(value.clone()))]) };
    state.entities.apply(vec![(conflict.key.clone(), op)]).await?;
    Ok(Json(Resolved { conflict_id: conflict.id.0, value }))
}

/// Digest of the replicated state.
#[derive(Serialize, ToSchema)]
pub struct DigestDto {
    /// Hex SHA-256.
    pub digest: String,
    /// Entities (tombstones included).
    pub entities: u64,
    /// Open conflicts.
    pub open_conflicts: u64,
}

/// Canonical hash of the replicated state.
#[utoipa::path(get, path = "/api/sync/digest", tag = "sync", responses((status = 200, body = DigestDto)))]
pub async fn digest(State(state): State<SharedState>) -> Result<Json<DigestDto>, ApiError> {
    let d = state.store.digest().await?;
    Ok(Json(DigestDto { digest: d.digest.to_hex(), entities: d.entities, open_conflicts: d.open_conflicts }))
}
