//! The session handshake and the check of signed requests: a bounded table of
//! unconfirmed handshakes and of established sessions, aged on the monotonic clock.

use std::collections::HashMap;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use tillmesh_domain::wire::{SessionAcceptedV1, SessionChallengeV1, SessionConfirmV1, SessionOpenV1};
use tillmesh_domain::DeviceId;
use tillmesh_transport_http::auth::{
    is_hex_of, random_hex, request_signature, tag_matches, Handshake, Tag, HEADER_SEQ, HEADER_SESSION, HEADER_SIG,
    ID_BYTES, NONCE_BYTES,
};

use super::PeerAuth;
use crate::http::error::ApiError;

/// A handshake waiting for the client's proof.
struct Pending {
    client_device: DeviceId,
    client_nonce: String,
    server_nonce: String,
    created: Instant,
}

/// An established session.
struct Live {
    client_device: DeviceId,
    key: Tag,
    generation: u64,
    last_seq: u64,
    last_used: Instant,
}

/// Unconfirmed handshakes and established sessions, both bounded.
#[derive(Default)]
pub(super) struct SessionTable {
    pending: HashMap<String, Pending>,
    live: HashMap<String, Live>,
}

/// A request that passed the check.
pub(super) struct Verified {
    pub device: DeviceId,
    pub key: Tag,
    pub seq: u64,
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

fn expired() -> ApiError {
    unauthorized("session_expired", "unknown or expired peer session: open a new one (POST /peer/v1/session)")
}

impl PeerAuth {
    /// Step 1 of the handshake: a fresh session id and server nonce.
    pub(super) fn open_session(&self, req: SessionOpenV1) -> Result<SessionChallengeV1, ApiError> {
        if !is_hex_of(&req.client_nonce, NONCE_BYTES) {
            return Err(ApiError::bad_request(
                "invalid_nonce",
                format!("client_nonce must be {NONCE_BYTES} bytes of hex"),
            ));
        }
        let session_id = random_hex(ID_BYTES);
        let server_nonce = random_hex(NONCE_BYTES);
        let now = Instant::now();
        let mut t = self.sessions();
        let ttl = self.limits.pending_ttl;
        t.pending.retain(|_, p| now.duration_since(p.created) <= ttl);
        while t.pending.len() >= self.limits.max_pending.max(1) {
            let Some(oldest) = t.pending.iter().min_by_key(|(_, p)| p.created).map(|(k, _)| k.clone()) else {
                break;
            };
            t.pending.remove(&oldest);
        }
        t.pending.insert(
            session_id.clone(),
            Pending {
                client_device: req.client_device,
                client_nonce: req.client_nonce,
                server_nonce: server_nonce.clone(),
                created: now,
            },
        );
        Ok(SessionChallengeV1 { session_id, server_nonce, server_device: self.device_id.clone() })
    }

    /// Step 2: checks the client's proof; on success the session is established and
    /// the server proves itself in turn.
    pub(super) fn confirm_session(&self, req: &SessionConfirmV1) -> Result<SessionAcceptedV1, ApiError> {
        let now = Instant::now();
        let mut t = self.sessions();
        let pending = t.pending.remove(&req.session_id).ok_or_else(expired)?;
        if now.duration_since(pending.created) > self.limits.pending_ttl {
            return Err(expired());
        }
        let (key, generation) = self.key.snapshot();
        let hs = Handshake {
            session_id: &req.session_id,
            client_nonce: &pending.client_nonce,
            server_nonce: &pending.server_nonce,
            client_device: pending.client_device.as_str(),
            server_device: self.device_id.as_str(),
        };
        if !tag_matches(&hs.client_proof(key.as_bytes()), &req.client_proof) {
            tracing::warn!(peer = %pending.client_device, "peer failed the store-key proof");
            return Err(unauthorized(
                "not_a_member",
                "the proof does not match this store's key: the terminal belongs to another store",
            ));
        }
        let session_key = hs.session_key(key.as_bytes());
        let server_proof = hex::encode(hs.server_proof(key.as_bytes()));
        let idle = self.limits.session_idle;
        t.live.retain(|_, s| now.duration_since(s.last_used) <= idle && s.generation == generation);
        while t.live.len() >= self.limits.max_sessions.max(1) {
            let Some(oldest) = t.live.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone()) else {
                break;
            };
            t.live.remove(&oldest);
        }
        t.live.insert(
            req.session_id.clone(),
            Live {
                client_device: pending.client_device.clone(),
                key: session_key,
                generation,
                last_seq: 0,
                last_used: now,
            },
        );
        Ok(SessionAcceptedV1 { server_proof, idle_timeout_secs: idle.as_secs() })
    }

    /// Checks a signed request: known live session made with the current key,
    /// valid signature over the request, sequence above every one seen before.
    pub(super) fn verify_request(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        query: &str,
        body_sha256_hex: &str,
    ) -> Result<Verified, ApiError> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(session_id), Some(seq), Some(sig)) = (get(HEADER_SESSION), get(HEADER_SEQ), get(HEADER_SIG)) else {
            return Err(unauthorized(
                "unauthenticated",
                "peer requests need a store-member session (x-tillmesh-session, x-tillmesh-seq, \
                 x-tillmesh-sig; see docs/PROTOCOL.md); the admin token is not accepted here",
            ));
        };
        let seq: u64 = seq
            .trim()
            .parse()
            .map_err(|_| unauthorized("bad_signature", "x-tillmesh-seq must be a non-negative integer"))?;
        let now = Instant::now();
        let (_, generation) = self.key.snapshot();
        let mut t = self.sessions();
        let Some(s) = t.live.get_mut(session_id) else {
            return Err(expired());
        };
        if now.duration_since(s.last_used) > self.limits.session_idle || s.generation != generation {
            t.live.remove(session_id);
            return Err(expired());
        }
        let expected = request_signature(&s.key, method, path, query, seq, body_sha256_hex);
        if !tag_matches(&expected, sig) {
            return Err(unauthorized(
                "bad_signature",
                "the request signature does not match (tampered with, or signed for another request)",
            ));
        }
        if seq <= s.last_seq {
            return Err(unauthorized(
                "replayed",
                format!("sequence number {seq} was already used in this session (replayed request)"),
            ));
        }
        s.last_seq = seq;
        s.last_used = now;
        Ok(Verified { device: s.client_device.clone(), key: s.key, seq })
    }

    /// Established sessions now (for tests and diagnostics).
    pub fn session_count(&self) -> usize {
        self.sessions().live.len()
    }

    /// Unconfirmed handshakes now (for tests and diagnostics).
    pub fn pending_count(&self) -> usize {
        self.sessions().pending.len()
    }
}
