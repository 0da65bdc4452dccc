//! Peer protocol endpoints (`/peer/v1/…`), see docs/PROTOCOL.md: the unauthenticated
//! identity probe `hello`, and `pull`, which only runs behind
//! [`crate::peer_auth::require_session`] (a signed store-member session).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::value::RawValue;
use tillmesh_domain::wire::{HelloV1, PullRequestV1, MAX_BATCH_SIZE, PROTOCOL_VERSION, SYNC_BATCH_BYTES};
use tillmesh_domain::DeviceId;

use super::error::{ApiError, ApiJson};
use super::SharedState;
use crate::peer_auth::PeerIdentity;

/// Who this terminal is: device id, name, protocol, public store id, port — nothing
/// secret, so discovery and pairing can identify a terminal before authenticating.
pub async fn hello(State(state): State<SharedState>) -> Json<HelloV1> {
    Json(HelloV1 {
        service: "tillmesh".into(),
        device_id: state.device_id.clone(),
        name: state.name.clone(),
        protocol: PROTOCOL_VERSION,
        store_id: state.peer_auth.store_id(),
        port: state.port,
    })
}

/// Serves a batch of this terminal's log to an authenticated member of the store.
pub async fn pull(
    State(state): State<SharedState>,
    Extension(peer): Extension<PeerIdentity>,
    ApiJson(req): ApiJson<PullRequestV1>,
) -> Result<Json<RawPullResponse>, ApiError> {
    if req.device_id != peer.device_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "device_mismatch",
            "the pull names another device than the session was opened for",
        ));
    }
    let limit = (req.limit as usize).clamp(1, MAX_BATCH_SIZE);
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(usize::MAX).clamp(1024, 4 * SYNC_BATCH_BYTES);
    let page = state.store.changes_after_json(req.after, limit, max_bytes, &req.known).await?;
    if peer.device_id != state.device_id {
        state.network.touch(&peer.device_id).await;
    }
    // The stored records are relayed as they are (no decode and re-encode): the
    // puller verifies every checksum before applying anything.
    let changes = page.changes.into_iter().map(RawValue::from_string).collect::<Result<Vec<_>, _>>().map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", format!("stored change is not JSON: {e}"))
    })?;
    Ok(Json(RawPullResponse {
        device_id: state.device_id.clone(),
        changes,
        next: page.next,
        has_more: page.has_more,
        head: page.head,
        log_epoch: state.writer_id.to_string(),
        epoch_start: state.epoch_start,
    }))
}

/// [`tillmesh_domain::wire::PullResponseV1`] as sent: the same JSON, with the changes spliced in raw.
#[derive(serde::Serialize)]
pub struct RawPullResponse {
    device_id: DeviceId,
    changes: Vec<Box<RawValue>>,
    next: u64,
    has_more: bool,
    head: u64,
    log_epoch: String,
    epoch_start: u64,
}
