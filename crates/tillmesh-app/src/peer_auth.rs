//! Store membership on the server side of the peer protocol (docs/PROTOCOL.md):
//! the session handshake (`POST /peer/v1/session`, `…/session/confirm`), the
//! middleware that checks every signed `/peer/*` request (session, strictly increasing
//! sequence, HMAC over method, path, query and body) and signs its response, and the
//! one-time pairing code with which a new terminal joins the store
//! (`POST /peer/v1/join/start`, `…/join/finish`, SPAKE2).
//!
//! Freshness never depends on wall clocks: sessions age on the monotonic clock
//! ([`std::time::Instant`]) of the server that issued them.

mod joining;
mod sessions;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tillmesh_domain::ports::StoreError;
use tillmesh_domain::wire::{
    JoinChallengeV1, JoinFinishV1, JoinGrantV1, JoinStartV1, SessionAcceptedV1, SessionChallengeV1, SessionConfirmV1,
    SessionOpenV1,
};
use tillmesh_domain::DeviceId;
use tillmesh_transport_http::auth::{response_signature, sha256_hex, HEADER_SIG};
use tillmesh_transport_http::{HttpTransport, StoreKey};

use crate::http::error::{ApiError, ApiJson};
use crate::secrets;
use crate::services::network::NetworkService;

pub use joining::IssuedCode;
use joining::Pairing;
use sessions::SessionTable;

/// Largest request body accepted on `/peer/*` routes.
pub const PEER_MAX_BODY: usize = 1 << 20;

/// Tunables of the authenticator (defaults in [`Limits::default`]).
#[derive(Clone, Debug)]
pub struct Limits {
    /// A session unused this long is forgotten (the client re-handshakes).
    pub session_idle: Duration,
    /// A handshake not confirmed within this is forgotten.
    pub pending_ttl: Duration,
    /// Most established sessions kept (the least recently used goes first).
    pub max_sessions: usize,
    /// Most unconfirmed handshakes kept (the oldest goes first).
    pub max_pending: usize,
    /// How long a pairing code is valid.
    pub code_validity: Duration,
    /// Wrong pairing-code guesses before the code is burned.
    pub code_tries: u32,
    /// Delay before answering a wrong pairing-code guess.
    pub wrong_code_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(10 * 60),
            pending_ttl: Duration::from_secs(30),
            max_sessions: 1024,
            max_pending: 256,
            code_validity: Duration::from_secs(5 * 60),
            code_tries: 5,
            wrong_code_delay: Duration::from_secs(1),
        }
    }
}

/// The authenticated peer of a request, put in its extensions by [`require_session`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's device id, as proven in the handshake.
    pub device_id: DeviceId,
}

/// Server side of store membership: sessions and pairing codes.
pub struct PeerAuth {
    device_id: DeviceId,
    key: StoreKey,
    limits: Limits,
    sessions: Mutex<SessionTable>,
    pairing: Mutex<Pairing>,
}

impl PeerAuth {
    /// An authenticator for terminal `device_id` of the store whose key is `key`.
    pub fn new(device_id: DeviceId, key: StoreKey) -> Self {
        Self::with_limits(device_id, key, Limits::default())
    }

    /// Same with explicit limits (tests use short ones).
    pub fn with_limits(device_id: DeviceId, key: StoreKey, limits: Limits) -> Self {
        Self {
            device_id,
            key,
            sessions: Mutex::new(SessionTable::default()),
            pairing: Mutex::new(Pairing::default()),
            limits,
        }
    }

    /// Public id of the store this terminal belongs to now.
    pub fn store_id(&self) -> String {
        secrets::store_id(&self.key.current())
    }

    /// The store key handle.
    pub fn store_key(&self) -> &StoreKey {
        &self.key
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, SessionTable> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pairing(&self) -> std::sync::MutexGuard<'_, Pairing> {
        self.pairing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The unauthenticated routes of store membership, to be nested under `/peer/v1`:
/// the session handshake and the pairing-code join.
pub fn routes<S: Clone + Send + Sync + 'static>(auth: Arc<PeerAuth>) -> Router<S> {
    Router::new()
        .route("/session", post(open_session))
        .route("/session/confirm", post(confirm_session))
        .route("/join/start", post(join_start))
        .route("/join/finish", post(join_finish))
        .with_state(auth)
}

async fn open_session(
    State(auth): State<Arc<PeerAuth>>,
    ApiJson(req): ApiJson<SessionOpenV1>,
) -> Result<Json<SessionChallengeV1>, ApiError> {
    auth.open_session(req).map(Json)
}

async fn confirm_session(
    State(auth): State<Arc<PeerAuth>>,
    ApiJson(req): ApiJson<SessionConfirmV1>,
) -> Result<Json<SessionAcceptedV1>, ApiError> {
    auth.confirm_session(&req).map(Json)
}

async fn join_start(
    State(auth): State<Arc<PeerAuth>>,
    ApiJson(req): ApiJson<JoinStartV1>,
) -> Result<Json<JoinChallengeV1>, ApiError> {
    auth.join_start(&req).map(Json)
}

async fn join_finish(
    State(auth): State<Arc<PeerAuth>>,
    ApiJson(req): ApiJson<JoinFinishV1>,
) -> Result<Json<JoinGrantV1>, ApiError> {
    auth.join_finish(&req).await.map(Json)
}

/// Middleware for every `/peer/*` route except hello and the handshake: checks the
/// request's session signature and sequence, passes the [`PeerIdentity`] on, and
/// signs the response with the session key.
pub async fn require_session(State(auth): State<Arc<PeerAuth>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > PEER_MAX_BODY as u64) {
        return too_large().into_response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, PEER_MAX_BODY).await else {
        return too_large().into_response();
    };
    let uri = parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.clone(), |u| u.0.clone());
    let verified = match auth.verify_request(
        &parts.headers,
        parts.method.as_str(),
        uri.path(),
        uri.query().unwrap_or(""),
        &sha256_hex(&bytes),
    ) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    parts.extensions.insert(PeerIdentity { device_id: verified.device.clone() });
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (mut rparts, rbody) = resp.into_parts();
    let Ok(rbytes) = axum::body::to_bytes(rbody, usize::MAX).await else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response_failed",
            "could not buffer the response to sign it",
        )
        .into_response();
    };
    let sig = response_signature(&verified.key, verified.seq, rparts.status.as_u16(), &sha256_hex(&rbytes));
    if let Ok(v) = HeaderValue::from_str(&hex::encode(sig)) {
        rparts.headers.insert(HEADER_SIG, v);
    }
    Response::from_parts(rparts, Body::from(rbytes))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("peer request bodies are limited to {PEER_MAX_BODY} bytes"),
    )
}

/// The joining side of pairing codes: fetches a store key from a peer and makes it
/// this terminal's key (persisted, then swapped in memory without a restart).
pub struct Membership {
    data_dir: PathBuf,
    transport: HttpTransport,
    key_was_configured: bool,
}

impl Membership {
    /// `data_dir` holds the `store-key` file; `transport` shares the key handle with
    /// the rest of the terminal. `key_was_configured`: the key came from
    /// `--store-key` / `TILLMESH_STORE_KEY`, which would override a joined key at the
    /// next start.
    pub fn new(data_dir: PathBuf, transport: HttpTransport, key_was_configured: bool) -> Self {
        Self { data_dir, transport, key_was_configured }
    }

    /// Runs the join exchange with the terminal at `base`.
    ///
    /// # Errors
    /// See [`tillmesh_transport_http::JoinError`].
    pub async fn fetch_key(&self, base: &str, code: &str) -> Result<String, tillmesh_transport_http::JoinError> {
        self.transport.join(base, code).await
    }

    /// Makes `key` this terminal's store key: writes it to `<data_dir>/store-key`
    /// (0600), swaps it in for the transport and the authenticator, and stops trusting
    /// the devices of the previous store.
    ///
    /// # Errors
    /// Writing the key file, or the registry.
    pub async fn adopt(&self, key: &str, network: &NetworkService) -> Result<(), StoreError> {
        secrets::load_or_create(&self.data_dir, "store-key", Some(key))
            .map_err(|e| StoreError::Unexpected(format!("cannot save the store key: {e}")))?;
        self.transport.store_key().replace(key);
        network.set_store_id(secrets::store_id(key));
        network.untrust_peers().await?;
        if self.key_was_configured {
            tracing::warn!(
                "this terminal joined another store, but it was started with --store-key / \
                 TILLMESH_STORE_KEY: remove that setting, or the old key comes back at the next start"
            );
        }
        tracing::info!(store = %secrets::store_id(key), "joined the store; new store key saved");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
