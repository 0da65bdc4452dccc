//! Peer protocol endpoints (`/peer/v1/…`), see docs/PROTOCOL.md: the unauthenticated
//! identity probe `hello`, and `pull`, which only runs behind
//! [`crate::peer_auth::require_session`] (a signed store-member session).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use tillmesh_domain::wire::{
    HelloV1, PullRequestV1, PullResponseV1, MAX_BATCH_SIZE, PROTOCOL_VERSION, SYNC_BATCH_BYTES,
};

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
) -> Result<Json<PullResponseV1>, ApiError> {
    if req.device_id != peer.device_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "device_mismatch",
            "the pull names another device than the session was opened for",
        ));
    }
    let limit = (req.limit as usize).clamp(1, MAX_BATCH_SIZE);
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(usize::MAX).clamp(1024, 4 * SYNC_BATCH_BYTES);
    let page = state.store.changes_after(req.after, limit, max_bytes, &req.known).await?;
    if peer.device_id != state.device_id {
        state.network.touch(&peer.device_id).await;
    }
    Ok(Json(PullResponseV1 {
        device_id: state.device_id.clone(),
        changes: page.changes,
        next: page.next,
        has_more: page.has_more,
        head: page.head,
        log_epoch: state.writer_id.to_string(),
        epoch_start: state.epoch_start,
    }))
}
