//! Pairing codes over the management API: `GET /api/network/pairing-code` makes one
//! on a terminal of the store; `POST /api/network/pair` with a `code` on a new
//! terminal joins that store (its key replaces this terminal's) before pairing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use tillmesh_domain::ports::TransportError;
use tillmesh_domain::Timestamp;
use tillmesh_transport_http::JoinError;
use utoipa::ToSchema;

use super::error::ApiError;
use super::SharedState;
use crate::config::peer_base_url;
use crate::secrets;
use crate::timefmt::rfc3339;

/// A one-time pairing code.
#[derive(Serialize, ToSchema)]
pub struct PairingCodeDto {
    /// Six digits, to type on the joining terminal.
    pub code: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
    /// Seconds it stays valid from now.
    pub valid_for_secs: u64,
}

/// Makes a one-time pairing code (replacing any earlier one): valid 5 minutes, for
/// one join, burned after 5 wrong tries.
#[utoipa::path(get, path = "/api/network/pairing-code", tag = "network",
    responses((status = 200, body = PairingCodeDto)))]
pub async fn pairing_code(State(state): State<SharedState>) -> Json<PairingCodeDto> {
    let issued = state.peer_auth.issue_code();
    let valid_ms = i64::try_from(issued.valid_for.as_millis()).unwrap_or(i64::MAX);
    let expires = Timestamp(state.clock.now().0.saturating_add(valid_ms));
    Json(PairingCodeDto { code: issued.code, expires_at: rfc3339(expires), valid_for_secs: issued.valid_for.as_secs() })
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Joins the store of the terminal at `address` with its pairing `code`: fetches the
/// store key (SPAKE2, see docs/PROTOCOL.md), saves it and switches to it. Nothing to
/// do when both already belong to the same store.
///
/// # Errors
/// 400 for a malformed address or code, 403 for a wrong code, 410 when the peer has
/// no active code, 422 when the peer is unreachable or not a terminal.
pub async fn join_store(state: &SharedState, address: &str, code: &str) -> Result<(), ApiError> {
    let base = peer_base_url(address).map_err(|m| ApiError::bad_request("invalid_address", m))?;
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::bad_request("invalid_code", "a pairing code is 6 digits"));
    }
    let hello = state.transport.hello(&base).await.map_err(|e| match e {
        TransportError::Unreachable(m) => {
            unprocessable("peer_unreachable", format!("no terminal answers at {base}: {m}"))
        }
        e => unprocessable("not_a_store_terminal", format!("{base} is not a tillmesh terminal: {e}")),
    })?;
    if hello.device_id == state.device_id {
        return Err(unprocessable("not_a_store_terminal", format!("{base} is this terminal itself")));
    }
    if hello.store_id == state.peer_auth.store_id() {
        return Ok(());
    }
    let key = state.membership.fetch_key(&base, code).await.map_err(|e| match e {
        JoinError::Unreachable(m) => unprocessable("peer_unreachable", format!("no terminal answers at {base}: {m}")),
        JoinError::WrongCode(m) => ApiError::new(StatusCode::FORBIDDEN, "wrong_pairing_code", m),
        JoinError::NoCode(m) => ApiError::new(StatusCode::GONE, "no_pairing_code", m),
        e @ (JoinError::Refused(_) | JoinError::Protocol(_)) => {
            unprocessable("pairing_refused", format!("joining via {base} failed: {e}"))
        }
    })?;
    if secrets::store_id(&key) != hello.store_id {
        return Err(unprocessable(
            "pairing_refused",
            format!("{base} handed over a key that is not the one of its store"),
        ));
    }
    state.membership.adopt(&key, &state.network).await?;
    Ok(())
}
