//! Peer protocol endpoints (`/peer/v1/…`), see docs/PROTOCOL.md.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use tillmesh_domain::wire::{
    HelloV1, PullRequestV1, PullResponseV1, MAX_BATCH_SIZE, PROTOCOL_VERSION, SYNC_BATCH_BYTES,
};

use super::error::{ApiError, ApiJson};
use super::SharedState;

/// Who this terminal is.
pub async fn hello(State(state): State<SharedState>) -> Json<HelloV1> {
    Json(HelloV1 {
        service: "tillmesh".into(),
        device_id: state.device_id.clone(),
        name: state.name.clone(),
        protocol: PROTOCOL_VERSION,
        store_id: state.store_id.clone(),
        port: state.port,
    })
}

/// Serves a batch of this terminal's log to a member of the same store.
pub async fn pull(
    State(state): State<SharedState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PullRequestV1>,
) -> Result<Json<PullResponseV1>, ApiError> {
    let store = headers
        .get("x-tillmesh-store")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if store != state.store_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_a_member",
            "this terminal belongs to another store",
        ));
    }
    let limit = (req.limit as usize).clamp(1, MAX_BATCH_SIZE);
    let max_bytes = usize::try_from(req.max_bytes)
        .unwrap_or(usize::MAX)
        .clamp(1024, 4 * SYNC_BATCH_BYTES);
    let page = state
        .store
        .changes_after(req.after, limit, max_bytes, &req.known)
        .await?;
    if req.device_id != state.device_id {
        state.network.touch(&req.device_id).await;
    }
    Ok(Json(PullResponseV1 {
        device_id: state.device_id.clone(),
        changes: page.changes,
        next: page.next,
        has_more: page.has_more,
        head: page.head,
    }))
}
