//! Peer transport over HTTP: the client side of the `/peer/v1/…` protocol
//! (see docs/PROTOCOL.md), implementing [`tillmesh_domain::ports::PeerTransport`],
//! with the store-membership session handshake, signed requests and verified
//! responses ([`auth`]), and joining a store with a pairing code ([`join`]).
//!
//! Architecture invariant: depends on the domain, reqwest and crypto crates only;
//! never on another adapter or on the app crate. The server side of the protocol
//! lives in `tillmesh-app` and reuses [`auth`] and [`join`].

pub mod auth;
pub mod join;
mod pull;
mod store_key;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use tillmesh_domain::ports::{PeerTransport, TransportError};
use tillmesh_domain::wire::{
    HelloV1, JoinChallengeV1, JoinFinishV1, JoinGrantV1, JoinStartV1, PullRequestV1, PullResponseV1, SessionAcceptedV1,
    SessionChallengeV1, SessionConfirmV1, SessionOpenV1, PROTOCOL_VERSION, PULL_LINES_MEDIA_TYPE,
};
use tillmesh_domain::DeviceId;

pub use store_key::StoreKey;

use crate::auth::{
    is_hex_of, random_hex, request_signature, response_signature, sha256_hex, tag_matches, Handshake, Tag, HEADER_SEQ,
    HEADER_SESSION, HEADER_SIG, ID_BYTES, NONCE_BYTES,
};

/// Longest a hello (health/identity check) may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one step of the session handshake or of a join may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the code-confirming step of a join may take (a wrong code is answered
/// after a deliberate delay).
const JOIN_FINISH_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest one pull may take, a full batch included.
const PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest pull response accepted, in bytes; a peer sending more is cut off.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Largest answer accepted to a hello, handshake or join step.
const MAX_SMALL_RESPONSE: usize = 64 << 10;

/// One established session with one peer.
struct ClientSession {
    id: String,
    key: Tag,
    generation: u64,
    peer: DeviceId,
    /// Last sequence number used; held while a request is in flight, so sequence
    /// numbers reach the server in order.
    seq: tokio::sync::Mutex<u64>,
}

/// HTTP client for the peer protocol.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    key: StoreKey,
    device_id: DeviceId,
    sessions: Arc<Mutex<HashMap<String, Arc<ClientSession>>>>,
}

/// Why joining a store with a pairing code failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// Nothing answers at the address.
    Unreachable(String),
    /// The peer has no active pairing code (none made, expired, used, or burned).
    NoCode(String),
    /// The code is wrong.
    WrongCode(String),
    /// The peer refused for another reason.
    Refused(String),
    /// The peer answered outside the protocol.
    Protocol(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Unreachable(m) => write!(f, "peer unreachable: {m}"),
            JoinError::NoCode(m) | JoinError::WrongCode(m) | JoinError::Refused(m) => f.write_str(m),
            JoinError::Protocol(m) => write!(f, "peer answered outside the protocol: {m}"),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<TransportError> for JoinError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Unreachable(m) => JoinError::Unreachable(m),
            TransportError::Unauthorized(m) | TransportError::Remote(m) => JoinError::Refused(m),
            TransportError::Protocol(m) => JoinError::Protocol(m),
        }
    }
}

/// A response as read: status, headers, body (bounded).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl HttpTransport {
    /// A client for terminal `device_id`, proving membership with the (shared,
    /// replaceable) store key `key`.
    ///
    /// # Errors
    /// [`TransportError::Protocol`] if the HTTP client cannot be built.
    pub fn new(key: StoreKey, device_id: DeviceId) -> Result<Self, TransportError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        Ok(Self { client, key, device_id, sessions: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// The store key handle this client proves membership with.
    pub fn store_key(&self) -> &StoreKey {
        &self.key
    }

    async fn send(&self, req: reqwest::RequestBuilder, max: usize) -> Result<Answer, TransportError> {
        let mut resp = req.send().await.map_err(classify)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(TransportError::Protocol("response too large".into()));
        }
        // Sized from the announced length (already bounded above): growing a batch's
        // megabyte step by step copied it about twice.
        let mut body = Vec::with_capacity(resp.content_length().map_or(0, |n| n as usize));
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > max {
                return Err(TransportError::Protocol("response too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, headers, body })
    }

    fn cached(&self, base: &str) -> Option<Arc<ClientSession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).get(base).cloned()
    }

    fn forget(&self, base: &str, session_id: &str) {
        let mut map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(base).is_some_and(|s| s.id == session_id) {
            map.remove(base);
        }
    }

    /// Runs the session handshake with `base` (mutual proof of the store key) and
    /// caches the session.
    async fn handshake(&self, base: &str) -> Result<Arc<ClientSession>, TransportError> {
        let (key, generation) = self.key.snapshot();
        let client_nonce = random_hex(NONCE_BYTES);
        let open = SessionOpenV1 { client_device: self.device_id.clone(), client_nonce: client_nonce.clone() };
        let a = self
            .send(
                self.client.post(url(base, "/peer/v1/session")).timeout(HANDSHAKE_TIMEOUT).json(&open),
                MAX_SMALL_RESPONSE,
            )
            .await?;
        let challenge: SessionChallengeV1 = decode(&a)?;
        if !is_hex_of(&challenge.session_id, ID_BYTES) || !is_hex_of(&challenge.server_nonce, NONCE_BYTES) {
            return Err(TransportError::Protocol("malformed session challenge".into()));
        }
        let hs = Handshake {
            session_id: &challenge.session_id,
            client_nonce: &client_nonce,
            server_nonce: &challenge.server_nonce,
            client_device: self.device_id.as_str(),
            server_device: challenge.server_device.as_str(),
        };
        let confirm = SessionConfirmV1 {
            session_id: challenge.session_id.clone(),
            client_proof: hex::encode(hs.client_proof(key.as_bytes())),
        };
        let a = self
            .send(
                self.client.post(url(base, "/peer/v1/session/confirm")).timeout(HANDSHAKE_TIMEOUT).json(&confirm),
                MAX_SMALL_RESPONSE,
            )
            .await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err(TransportError::Unauthorized(format!(
                "the peer does not accept this terminal's store key, so it belongs to another store ({})",
                error_of(&a.body).1
            )));
        }
        let accepted: SessionAcceptedV1 = decode(&a)?;
        if !tag_matches(&hs.server_proof(key.as_bytes()), &accepted.server_proof) {
            return Err(TransportError::Unauthorized("the peer could not prove it holds this store's key".into()));
        }
        let session = Arc::new(ClientSession {
            id: challenge.session_id.clone(),
            key: hs.session_key(key.as_bytes()),
            generation,
            peer: challenge.server_device.clone(),
            seq: tokio::sync::Mutex::new(0),
        });
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).insert(base.to_string(), session.clone());
        Ok(session)
    }

    /// The cached session with `base` if it was made with the current key, else a new one.
    async fn session(&self, base: &str) -> Result<Arc<ClientSession>, TransportError> {
        let (_, generation) = self.key.snapshot();
        match self.cached(base) {
            Some(s) if s.generation == generation => Ok(s),
            _ => self.handshake(base).await,
        }
    }

    /// Sends a signed `POST` in the session with `base` and checks the response's
    /// signature; re-handshakes once when the server has forgotten the session.
    async fn signed_post(
        &self,
        base: &str,
        path: &str,
        body: Vec<u8>,
        accept: &str,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let target = reqwest::Url::parse(&url(base, path))
            .map_err(|e| TransportError::Protocol(format!("bad peer address {base}: {e}")))?;
        let body_hash = sha256_hex(&body);
        for attempt in 0..2 {
            let session = self.session(base).await?;
            let mut last = session.seq.lock().await;
            *last += 1;
            let seq = *last;
            let sig =
                request_signature(&session.key, "POST", target.path(), target.query().unwrap_or(""), seq, &body_hash);
            let a = self
                .send(
                    self.client
                        .post(target.clone())
                        .timeout(timeout)
                        .header(CONTENT_TYPE, "application/json")
                        .header(ACCEPT, accept)
                        .header(HEADER_SESSION, &session.id)
                        .header(HEADER_SEQ, seq.to_string())
                        .header(HEADER_SIG, hex::encode(sig))
                        .body(body.clone()),
                    MAX_RESPONSE_BYTES,
                )
                .await?;
            drop(last);
            if a.status == StatusCode::UNAUTHORIZED {
                self.forget(base, &session.id);
                let (code, message) = error_of(&a.body);
                if code == "session_expired" && attempt == 0 {
                    tracing::debug!(%base, "peer session expired; handshaking again");
                    continue;
                }
                return Err(TransportError::Unauthorized(message));
            }
            if a.status == StatusCode::PAYLOAD_TOO_LARGE {
                // Refused before the session was checked, so unsigned; nothing to trust in it.
                return Err(TransportError::Remote("the peer refused the request as too large".into()));
            }
            let presented = a.headers.get(HEADER_SIG).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let expected = response_signature(&session.key, seq, a.status.as_u16(), &sha256_hex(&a.body));
            if !tag_matches(&expected, presented) {
                return Err(TransportError::Protocol(
                    "the peer's answer is not signed with our session (tampered with in transit?)".into(),
                ));
            }
            return Ok(a);
        }
        Err(TransportError::Unauthorized("the peer keeps refusing fresh sessions".into()))
    }

    /// Joins the store of the terminal at `base` with its one-time pairing `code`
    /// (SPAKE2, see docs/PROTOCOL.md) and returns that store's key. The caller
    /// stores it and replaces its own key.
    ///
    /// # Errors
    /// [`JoinError`] saying why.
    pub async fn join(&self, base: &str, code: &str) -> Result<String, JoinError> {
        let (state, client_msg) = join::client_start(code);
        let start = JoinStartV1 { client_device: self.device_id.clone(), msg: hex::encode(&client_msg) };
        let a = self
            .send(
                self.client.post(url(base, "/peer/v1/join/start")).timeout(HANDSHAKE_TIMEOUT).json(&start),
                MAX_SMALL_RESPONSE,
            )
            .await?;
        let challenge: JoinChallengeV1 = join_decode(&a)?;
        let server_msg =
            hex::decode(&challenge.msg).map_err(|_| JoinError::Protocol("malformed SPAKE2 message".into()))?;
        let key = state.finish(&server_msg).ok_or_else(|| JoinError::Protocol("malformed SPAKE2 message".into()))?;
        let transcript = join::Transcript {
            join_id: &challenge.join_id,
            client_msg: &client_msg,
            server_msg: &server_msg,
            client_device: self.device_id.as_str(),
            server_device: challenge.server_device.as_str(),
        };
        let finish =
            JoinFinishV1 { join_id: challenge.join_id.clone(), confirm: hex::encode(key.client_confirm(&transcript)) };
        let a = self
            .send(
                self.client.post(url(base, "/peer/v1/join/finish")).timeout(JOIN_FINISH_TIMEOUT).json(&finish),
                MAX_SMALL_RESPONSE,
            )
            .await?;
        let grant: JoinGrantV1 = join_decode(&a)?;
        if !tag_matches(&key.server_confirm(&transcript), &grant.server_confirm) {
            return Err(JoinError::Protocol("the peer could not confirm the pairing code".into()));
        }
        let sealed = hex::decode(&grant.sealed_key).map_err(|_| JoinError::Protocol("malformed sealed key".into()))?;
        let plain = key
            .open(&challenge.join_id, &sealed, &grant.tag)
            .ok_or_else(|| JoinError::Protocol("the sealed store key failed its check".into()))?;
        String::from_utf8(plain).map_err(|_| JoinError::Protocol("the store key is not text".into()))
    }
}

/// `(code, message)` of an API error body, or empty code and the raw text.
fn error_of(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
    let message = match v["error"]["message"].as_str() {
        Some(m) => m.to_string(),
        None => String::from_utf8_lossy(body).chars().take(300).collect(),
    };
    (code, message)
}

fn decode<T: serde::de::DeserializeOwned>(a: &Answer) -> Result<T, TransportError> {
    let status = a.status;
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(TransportError::Unauthorized(error_of(&a.body).1));
    }
    if status == StatusCode::NOT_FOUND {
        return Err(TransportError::Protocol(format!("not a tillmesh terminal ({status})")));
    }
    if !status.is_success() {
        return Err(TransportError::Remote(format!("{status}: {}", error_of(&a.body).1)));
    }
    serde_json::from_slice(&a.body).map_err(|e| TransportError::Protocol(format!("undecodable answer: {e}")))
}

fn join_decode<T: serde::de::DeserializeOwned>(a: &Answer) -> Result<T, JoinError> {
    match a.status {
        StatusCode::FORBIDDEN => Err(JoinError::WrongCode(error_of(&a.body).1)),
        StatusCode::GONE => Err(JoinError::NoCode(error_of(&a.body).1)),
        StatusCode::NOT_FOUND => Err(JoinError::Protocol("not a tillmesh terminal that accepts pairing codes".into())),
        s if !s.is_success() => Err(JoinError::Refused(format!("{s}: {}", error_of(&a.body).1))),
        _ => serde_json::from_slice(&a.body).map_err(|e| JoinError::Protocol(format!("undecodable answer: {e}"))),
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() || e.is_connect() || e.is_request() {
        TransportError::Unreachable(e.to_string())
    } else if e.is_decode() || e.is_body() {
        TransportError::Protocol(e.to_string())
    } else {
        TransportError::Unreachable(e.to_string())
    }
}

fn url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[async_trait]
impl PeerTransport for HttpTransport {
    async fn hello(&self, base: &str) -> Result<HelloV1, TransportError> {
        let a =
            self.send(self.client.get(url(base, "/peer/v1/hello")).timeout(HELLO_TIMEOUT), MAX_SMALL_RESPONSE).await?;
        let hello: HelloV1 = decode(&a)?;
        if hello.service != "tillmesh" {
            return Err(TransportError::Protocol("the address answers but is not a tillmesh terminal".into()));
        }
        if hello.protocol != PROTOCOL_VERSION {
            return Err(TransportError::Protocol(format!(
                "peer speaks protocol {}, this terminal {PROTOCOL_VERSION}",
                hello.protocol
            )));
        }
        Ok(hello)
    }

    async fn pull(&self, base: &str, req: &PullRequestV1) -> Result<PullResponseV1, TransportError> {
        let body = serde_json::to_vec(req).map_err(|e| TransportError::Protocol(e.to_string()))?;
        let accept = format!("{PULL_LINES_MEDIA_TYPE}, application/json;q=0.5");
        let a = self.signed_post(base, "/peer/v1/pull", body, &accept, PULL_TIMEOUT).await?;
        // Errors are decoded as for any request; a batch by `pull::decode_pull*`.
        if !a.status.is_success() {
            return decode(&a);
        }
        let media = a.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if media.starts_with(PULL_LINES_MEDIA_TYPE) {
            pull::decode_pull_lines(a.body).await
        } else {
            pull::decode_pull(a.body).await
        }
    }

    async fn verify_membership(&self, base: &str) -> Result<DeviceId, TransportError> {
        Ok(self.handshake(base).await?.peer.clone())
    }
}
