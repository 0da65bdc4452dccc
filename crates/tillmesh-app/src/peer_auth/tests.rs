//! Unit tests of the peer authenticator: handshake, signed requests, replay and
//! tamper rejection, idle expiry, bounded tables, and pairing codes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use tillmesh_domain::wire::{JoinFinishV1, JoinStartV1, SessionConfirmV1, SessionOpenV1};
use tillmesh_domain::DeviceId;
use tillmesh_transport_http::auth::{
    random_hex, request_signature, sha256_hex, Handshake, Tag, HEADER_SEQ, HEADER_SESSION, HEADER_SIG, NONCE_BYTES,
};
use tillmesh_transport_http::join;
use tillmesh_transport_http::StoreKey;

use super::{Limits, PeerAuth};

const KEY: &str = "store-key-one";

fn auth_with(limits: Limits) -> PeerAuth {
    PeerAuth::with_limits(
        DeviceId::parse("server").unwrap(),
        StoreKey::new(KEY),
        Limits { wrong_code_delay: Duration::from_millis(1), ..limits },
    )
}

fn auth() -> PeerAuth {
    auth_with(Limits::default())
}

/// Runs the client side of the handshake with `key`; returns session id and key.
fn handshake(auth: &PeerAuth, key: &str) -> Result<(String, Tag), crate::http::error::ApiError> {
    let nonce = random_hex(NONCE_BYTES);
    let ch = auth.open_session(SessionOpenV1 {
        client_device: DeviceId::parse("client").unwrap(),
        client_nonce: nonce.clone(),
    })?;
    let hs = Handshake {
        session_id: &ch.session_id,
        client_nonce: &nonce,
        server_nonce: &ch.server_nonce,
        client_device: "client",
        server_device: ch.server_device.as_str(),
    };
    let acc = auth.confirm_session(&SessionConfirmV1 {
        session_id: ch.session_id.clone(),
        client_proof: hex::encode(hs.client_proof(key.as_bytes())),
    })?;
    assert_eq!(acc.server_proof, hex::encode(hs.server_proof(key.as_bytes())));
    let session_key = hs.session_key(key.as_bytes());
    Ok((ch.session_id, session_key))
}

fn signed(session: &str, key: &Tag, seq: u64, body: &[u8]) -> HeaderMap {
    let sig = request_signature(key, "POST", "/peer/v1/pull", "", seq, &sha256_hex(body));
    let mut h = HeaderMap::new();
    h.insert(HEADER_SESSION, HeaderValue::from_str(session).unwrap());
    h.insert(HEADER_SEQ, HeaderValue::from(seq));
    h.insert(HEADER_SIG, HeaderValue::from_str(&hex::encode(sig)).unwrap());
    h
}

fn check(auth: &PeerAuth, h: &HeaderMap, body: &[u8]) -> Result<u64, &'static str> {
    auth.verify_request(h, "POST", "/peer/v1/pull", "", &sha256_hex(body)).map(|v| v.seq).map_err(|e| e.code)
}

#[test]
fn a_member_authenticates_and_its_signed_requests_pass_once_each() {
    let a = auth();
    let (id, key) = handshake(&a, KEY).unwrap();
    assert_eq!(check(&a, &signed(&id, &key, 1, b"{}"), b"{}"), Ok(1));
    assert_eq!(check(&a, &signed(&id, &key, 2, b"{}"), b"{}"), Ok(2));
    assert_eq!(check(&a, &signed(&id, &key, 2, b"{}"), b"{}"), Err("replayed"));
    assert_eq!(check(&a, &signed(&id, &key, 1, b"{}"), b"{}"), Err("replayed"));
    assert_eq!(check(&a, &signed(&id, &key, 9, b"{}"), b"{}"), Ok(9));
}

#[test]
fn a_tampered_body_path_or_signature_is_refused() {
    let a = auth();
    let (id, key) = handshake(&a, KEY).unwrap();
    let h = signed(&id, &key, 1, b"{\"after\":0}");
    assert_eq!(check(&a, &h, b"{\"after\":9}"), Err("bad_signature"));
    let other_path = a.verify_request(&h, "POST", "/peer/v1/other", "", &sha256_hex(b"{\"after\":0}"));
    assert_eq!(other_path.err().map(|e| e.code), Some("bad_signature"));
    let mut forged = h.clone();
    forged.insert(HEADER_SIG, HeaderValue::from_static("00"));
    assert_eq!(check(&a, &forged, b"{\"after\":0}"), Err("bad_signature"));
    // The untouched request still passes: a refused forgery does not burn its sequence.
    assert_eq!(check(&a, &h, b"{\"after\":0}"), Ok(1));
}

#[test]
fn a_terminal_of_another_store_fails_the_handshake() {
    let a = auth();
    let e = handshake(&a, "some-other-store-key").err().unwrap();
    assert_eq!(e.code, "not_a_member");
    assert_eq!(e.status.as_u16(), 401);
    assert_eq!(a.session_count(), 0);
}

#[test]
fn requests_without_a_session_or_with_an_unknown_one_are_refused() {
    let a = auth();
    assert_eq!(check(&a, &HeaderMap::new(), b""), Err("unauthenticated"));
    let mut bearer = HeaderMap::new();
    bearer.insert("authorization", HeaderValue::from_static("Bearer admin"));
    assert_eq!(check(&a, &bearer, b""), Err("unauthenticated"));
    assert_eq!(check(&a, &signed("ab", &[0; 32], 1, b""), b""), Err("session_expired"));
    let (id, key) = handshake(&a, KEY).unwrap();
    let mut neg = signed(&id, &key, 1, b"");
    neg.insert(HEADER_SEQ, HeaderValue::from_static("-1"));
    assert_eq!(check(&a, &neg, b""), Err("bad_signature"));
}

#[test]
fn a_session_idle_past_the_timeout_expires() {
    let a = auth_with(Limits { session_idle: Duration::from_millis(30), ..Limits::default() });
    let (id, key) = handshake(&a, KEY).unwrap();
    assert_eq!(check(&a, &signed(&id, &key, 1, b""), b""), Ok(1));
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(check(&a, &signed(&id, &key, 2, b""), b""), Err("session_expired"));
}

#[test]
fn the_session_table_is_bounded_and_evicts_the_least_recently_used() {
    let a = auth_with(Limits { max_sessions: 2, max_pending: 2, ..Limits::default() });
    let (s1, k1) = handshake(&a, KEY).unwrap();
    let (s2, k2) = handshake(&a, KEY).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(check(&a, &signed(&s1, &k1, 1, b""), b""), Ok(1));
    let (s3, k3) = handshake(&a, KEY).unwrap();
    assert_eq!(a.session_count(), 2);
    assert_eq!(check(&a, &signed(&s2, &k2, 1, b""), b""), Err("session_expired"));
    assert_eq!(check(&a, &signed(&s1, &k1, 2, b""), b""), Ok(2));
    assert_eq!(check(&a, &signed(&s3, &k3, 1, b""), b""), Ok(1));
    // Floods of unconfirmed handshakes stay bounded and cannot evict live sessions.
    for _ in 0..100 {
        a.open_session(SessionOpenV1 {
            client_device: DeviceId::parse("flood").unwrap(),
            client_nonce: random_hex(NONCE_BYTES),
        })
        .unwrap();
    }
    assert!(a.pending_count() <= 2);
    assert_eq!(check(&a, &signed(&s1, &k1, 3, b""), b""), Ok(3));
}

#[test]
fn replacing_the_store_key_ends_sessions_made_with_the_old_one() {
    let a = auth();
    let (id, key) = handshake(&a, KEY).unwrap();
    a.store_key().replace("new-key");
    assert_eq!(check(&a, &signed(&id, &key, 1, b""), b""), Err("session_expired"));
    assert!(handshake(&a, KEY).is_err());
    assert!(handshake(&a, "new-key").is_ok());
}

/// Runs a join with `code`; returns the unsealed key or the error code.
async fn join_with(a: &PeerAuth, code: &str) -> Result<String, &'static str> {
    let (client, msg) = join::client_start(code);
    let ch = a
        .join_start(&JoinStartV1 { client_device: DeviceId::parse("newcomer").unwrap(), msg: hex::encode(&msg) })
        .map_err(|e| e.code)?;
    let server_msg = hex::decode(&ch.msg).unwrap();
    let k = client.finish(&server_msg).unwrap();
    let t = join::Transcript {
        join_id: &ch.join_id,
        client_msg: &msg,
        server_msg: &server_msg,
        client_device: "newcomer",
        server_device: "server",
    };
    let grant = a
        .join_finish(&JoinFinishV1 { join_id: ch.join_id.clone(), confirm: hex::encode(k.client_confirm(&t)) })
        .await
        .map_err(|e| e.code)?;
    assert_eq!(grant.server_confirm, hex::encode(k.server_confirm(&t)));
    let plain = k.open(&ch.join_id, &hex::decode(&grant.sealed_key).unwrap(), &grant.tag).unwrap();
    Ok(String::from_utf8(plain).unwrap())
}

#[tokio::test]
async fn the_right_pairing_code_hands_over_the_store_key_once() {
    let a = auth();
    assert_eq!(join_with(&a, "123456").await, Err("no_pairing_code"));
    let code = a.issue_code();
    assert_eq!(code.code.len(), 6);
    assert_eq!(join_with(&a, &code.code).await, Ok(KEY.to_string()));
    assert_eq!(join_with(&a, &code.code).await, Err("no_pairing_code"));
}

#[tokio::test]
async fn five_wrong_pairing_codes_burn_the_code() {
    let a = auth();
    let code = a.issue_code().code;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        assert_eq!(join_with(&a, wrong).await, Err("wrong_pairing_code"));
    }
    assert_eq!(join_with(&a, &code).await, Err("no_pairing_code"));
}

#[tokio::test]
async fn an_expired_pairing_code_no_longer_works() {
    let a = auth_with(Limits { code_validity: Duration::from_millis(20), ..Limits::default() });
    let code = a.issue_code().code;
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(join_with(&a, &code).await, Err("no_pairing_code"));
}

#[test]
fn a_malformed_join_message_is_a_client_error() {
    let a = auth();
    a.issue_code();
    for msg in ["zz", "", "00", &"ab".repeat(200)] {
        let e = a
            .join_start(&JoinStartV1 { client_device: DeviceId::parse("x").unwrap(), msg: msg.to_string() })
            .err()
            .unwrap();
        assert_eq!(e.status.as_u16(), 400, "{msg}");
    }
}

/// A peer that claims `store_id` in hello and passes the handshake only if `member`.
struct Claimant {
    store_id: String,
    member: bool,
    handshakes: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl tillmesh_domain::ports::PeerTransport for Claimant {
    async fn hello(
        &self,
        _base: &str,
    ) -> Result<tillmesh_domain::wire::HelloV1, tillmesh_domain::ports::TransportError> {
        Ok(tillmesh_domain::wire::HelloV1 {
            service: "tillmesh".into(),
            device_id: DeviceId::parse("peer").unwrap(),
            name: "Till 2".into(),
            protocol: tillmesh_domain::wire::PROTOCOL_VERSION,
            store_id: self.store_id.clone(),
            port: 7700,
        })
    }

    async fn pull(
        &self,
        _base: &str,
        _req: &tillmesh_domain::wire::PullRequestV1,
    ) -> Result<tillmesh_domain::wire::PullResponseV1, tillmesh_domain::ports::TransportError> {
        Err(tillmesh_domain::ports::TransportError::Remote("not in these tests".into()))
    }

    async fn verify_membership(&self, _base: &str) -> Result<DeviceId, tillmesh_domain::ports::TransportError> {
        self.handshakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.member {
            Ok(DeviceId::parse("peer").unwrap())
        } else {
            Err(tillmesh_domain::ports::TransportError::Unauthorized("not a member".into()))
        }
    }
}

/// Discovers `peer` through a claimant; returns whether it was recorded as trusted
/// and how many handshakes were tried.
async fn discovered_trust(claimed_store: &str, member: bool) -> (Option<bool>, usize) {
    use crate::services::network::NetworkService;
    use tillmesh_domain::ports::{DiscoveryEvent, Store};
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(tillmesh_store_sqlite::SqliteStore::open_in_memory().unwrap());
    let transport = std::sync::Arc::new(Claimant {
        store_id: claimed_store.to_string(),
        member,
        handshakes: std::sync::atomic::AtomicUsize::new(0),
    });
    let net = NetworkService::new(
        DeviceId::parse("me").unwrap(),
        crate::secrets::store_id(KEY),
        store.clone(),
        std::sync::Arc::new(crate::system::SystemClock),
        transport.clone(),
        crate::events::EventBus::new(),
        tillmesh_domain::LivenessPolicy::new(1_000, 3_000),
    );
    net.on_discovered(DiscoveryEvent::Found {
        device_id: DeviceId::parse("peer").unwrap(),
        name: "Till 2".into(),
        addresses: vec!["10.0.0.2".into()],
        port: 7700,
        store_id: claimed_store.to_string(),
        protocol: tillmesh_domain::wire::PROTOCOL_VERSION,
    })
    .await;
    let trusted = store.device(&DeviceId::parse("peer").unwrap()).await.unwrap().map(|d| d.trusted);
    (trusted, transport.handshakes.load(std::sync::atomic::Ordering::SeqCst))
}

#[tokio::test]
async fn a_discovered_terminal_is_trusted_only_after_the_authenticated_handshake() {
    let ours = crate::secrets::store_id(KEY);
    assert_eq!(discovered_trust(&ours, true).await, (Some(true), 1));
    assert_eq!(discovered_trust(&ours, false).await, (Some(false), 1), "a copied store id is not enough");
    let (trusted, handshakes) = discovered_trust("0123456789abcdef", true).await;
    assert_eq!(trusted, Some(false), "another store's terminal is listed, untrusted");
    assert_eq!(handshakes, 0);
}
