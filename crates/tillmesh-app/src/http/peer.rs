//! Peer protocol endpoints (`/peer/v1/…`), see docs/PROTOCOL.md: the unauthenticated
//! identity probe `hello`, and `pull`, which only runs behind
//! [`crate::peer_auth::require_session`] (a signed store-member session).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
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
) -> Result<RawPullResponse, ApiError> {
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
    Ok(RawPullResponse {
        device_id: state.device_id.clone(),
        changes: page.changes,
        next: page.next,
        has_more: page.has_more,
        head: page.head,
        log_epoch: state.writer_id.to_string(),
        epoch_start: state.epoch_start,
    })
}

/// [`tillmesh_domain::wire::PullResponseV1`] as sent: the same JSON, with the stored
/// records spliced in as they are.
///
/// Why not serde: serializing `Box<RawValue>`s means parsing every record once more to
/// make them (a fifth of the server's CPU when serving a sync, measured), although the
/// store only holds records it encoded or verified itself.
pub struct RawPullResponse {
    device_id: DeviceId,
    changes: Vec<String>,
    next: u64,
    has_more: bool,
    head: u64,
    log_epoch: String,
    epoch_start: u64,
}

impl RawPullResponse {
    /// The JSON text of the response.
    fn to_json(&self) -> String {
        let records: usize = self.changes.iter().map(|c| c.len() + 1).sum();
        let mut out = String::with_capacity(records + 256);
        out.push_str("{\"device_id\":");
        out.push_str(&json_string(self.device_id.as_str()));
        out.push_str(",\"changes\":[");
        for (i, c) in self.changes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(c);
        }
        out.push_str(&format!(
            "],\"next\":{},\"has_more\":{},\"head\":{},\"log_epoch\":{},\"epoch_start\":{}}}",
            self.next,
            self.has_more,
            self.head,
            json_string(&self.log_epoch),
            self.epoch_start
        ));
        out
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    // Encoding a string cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

impl IntoResponse for RawPullResponse {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.to_json()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillmesh_domain::wire::PullResponseV1;
    use tillmesh_domain::{ChangeRecord, EncodedChange, EntityKey, EntityState, Timestamp};

    fn record(seq: u64) -> String {
        let d = DeviceId::parse("dev-a").expect("id");
        let mut s = EntityState::default();
        s.context.observe(&d, seq);
        EncodedChange::new(ChangeRecord::new(d, seq, EntityKey::new("t", "x").expect("key"), Timestamp(7), s))
            .into_json()
    }

    #[test]
    fn the_written_response_is_the_protocol_message() {
        for changes in [vec![], vec![record(1)], vec![record(1), record(2), record(3)]] {
            let raw = RawPullResponse {
                device_id: DeviceId::parse("server").expect("id"),
                changes: changes.clone(),
                next: 42,
                has_more: true,
                head: 99,
                log_epoch: "epoch \"7\"\n".into(),
                epoch_start: 5,
            };
            let got: PullResponseV1 = serde_json::from_str(&raw.to_json()).expect("valid JSON of the message");
            assert_eq!(got.device_id.as_str(), "server");
            let sent: Vec<String> = got.changes.iter().map(|c| c.json().to_string()).collect();
            assert_eq!(sent, changes);
            assert_eq!((got.next, got.has_more, got.head, got.epoch_start), (42, true, 99, 5));
            assert_eq!(got.log_epoch, "epoch \"7\"\n");
        }
    }
}
