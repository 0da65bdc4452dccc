//! Store membership and hardening, against the real binary and in-process peers:
//! authenticated pairing and sync, refusal of other stores and of forged identities,
//! replayed, tampered or admin-token peer requests, pairing-code joins, the admin
//! token on every management route, malformed peer input (always 4xx), and fuzzing
//! of the pull-response and change-record decoders (`cargo test -p tillmesh-tests
//! --test security -- fuzz`, scaled with `PROPTEST_CASES`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use proptest::prelude::*;
use serde_json::{json, Value};
use tillmesh_app::peer_auth::{self, PeerAuth};
use tillmesh_domain::ports::{PeerTransport, TransportError};
use tillmesh_domain::wire::{HelloV1, PullRequestV1, PullResponseV1};
use tillmesh_domain::{ChangeRecord, DeviceId, EntityKey, EntityOp, EntityState, Timestamp, VectorClock};
use tillmesh_tests::{TerminalProcess, ADMIN_TOKEN, STORE_KEY};
use tillmesh_transport_http::auth::{
    random_hex, request_signature, response_signature, sha256_hex, Handshake, Tag, HEADER_SEQ, HEADER_SESSION,
    HEADER_SIG, NONCE_BYTES,
};
use tillmesh_transport_http::{HttpTransport, StoreKey};

const OTHER_KEY: &str = "another-store-key-fedcba9876543210";

// ---------------------------------------------------------------- helpers

fn put(t: &TerminalProcess, path: &str, fields: Value) -> Result<Value> {
    t.ok("PUT", &format!("/api/entities/{path}"), Some(&json!({ "fields": fields })))
}

fn sync_ok(t: &TerminalProcess) -> Result<Value> {
    let r = t.sync_now()?;
    for p in r["peers"].as_array().into_iter().flatten() {
        if !p["error"].is_null() {
            bail!("sync error: {p}");
        }
    }
    Ok(r)
}

fn pair_call(t: &TerminalProcess, address: &str, code: Option<&str>) -> Result<(u16, Value)> {
    let mut body = json!({ "address": address });
    if let Some(c) = code {
        body["code"] = json!(c);
    }
    t.call("POST", "/api/network/pair", Some(&body))
}

fn device<'a>(devices: &'a Value, id: &str) -> Option<&'a Value> {
    devices["devices"].as_array()?.iter().find(|d| d["device_id"] == id)
}

/// A peer session opened by hand, to craft, capture and replay signed requests.
struct PeerSession {
    base: String,
    device: String,
    id: String,
    key: Tag,
    seq: u64,
    http: reqwest::blocking::Client,
}

/// What a raw peer request got back.
struct Reply {
    status: u16,
    json: Value,
    body: Vec<u8>,
    sig: Option<String>,
    media: String,
}

fn send(http: &reqwest::blocking::Client, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Result<Reply> {
    let mut req = http.post(url).header("content-type", "application/json").body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send()?;
    let status = resp.status().as_u16();
    let sig = resp.headers().get(HEADER_SIG).and_then(|v| v.to_str().ok()).map(String::from);
    let media = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.bytes()?.to_vec();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(Reply { status, json, body, sig, media })
}

impl PeerSession {
    fn open(t: &TerminalProcess, store_key: &str, device: &str) -> Result<Self> {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build()?;
        let nonce = random_hex(NONCE_BYTES);
        let ch = send(
            &http,
            &format!("{}/peer/v1/session", t.url),
            &[],
            serde_json::to_vec(&json!({"client_device": device, "client_nonce": nonce}))?,
        )?;
        assert_eq!(ch.status, 200, "{}", ch.json);
        let session_id = ch.json["session_id"].as_str().unwrap().to_string();
        let server_nonce = ch.json["server_nonce"].as_str().unwrap().to_string();
        let server_device = ch.json["server_device"].as_str().unwrap().to_string();
        let hs = Handshake {
            session_id: &session_id,
            client_nonce: &nonce,
            server_nonce: &server_nonce,
            client_device: device,
            server_device: &server_device,
        };
        let confirm = send(
            &http,
            &format!("{}/peer/v1/session/confirm", t.url),
            &[],
            serde_json::to_vec(&json!({
                "session_id": session_id,
                "client_proof": hex::encode(hs.client_proof(store_key.as_bytes())),
            }))?,
        )?;
        if confirm.status != 200 {
            bail!("handshake refused: {} {}", confirm.status, confirm.json);
        }
        assert_eq!(
            confirm.json["server_proof"],
            hex::encode(hs.server_proof(store_key.as_bytes())),
            "the server proves it holds the store key too"
        );
        let key = hs.session_key(store_key.as_bytes());
        Ok(Self { base: t.url.clone(), device: device.to_string(), id: session_id, key, seq: 0, http })
    }

    /// Signs `body` for `path` with the next sequence number; returns the headers.
    fn sign(&mut self, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        self.seq += 1;
        let sig = request_signature(&self.key, "POST", path, "", self.seq, &sha256_hex(body));
        vec![(HEADER_SESSION, self.id.clone()), (HEADER_SEQ, self.seq.to_string()), (HEADER_SIG, hex::encode(sig))]
    }

    fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Result<Reply> {
        send(&self.http, &format!("{}{path}", self.base), headers, body.to_vec())
    }

    fn pull_body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "device_id": self.device, "after": 0, "limit": 100, "max_bytes": 1_048_576, "known": {}
        }))
        .unwrap()
    }

    fn response_is_signed(&self, r: &Reply) -> bool {
        let expected = response_signature(&self.key, self.seq, r.status, &sha256_hex(&r.body));
        r.sig.as_deref() == Some(hex::encode(expected).as_str())
    }
}

// ---------------------------------------------------------------- real binary

#[test]
fn two_terminals_of_the_same_store_pair_as_trusted_and_sync() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let b = TerminalProcess::start(&[])?;
    let paired = a.pair(&b)?;
    assert_eq!(paired["trusted"], true);
    b.pair(&a)?;
    put(&a, "product/p1", json!({"name": "Tea"}))?;
    put(&b, "product/p2", json!({"name": "Cake"}))?;
    sync_ok(&a)?;
    sync_ok(&b)?;
    assert_eq!(a.digest()?, b.digest()?);
    assert_eq!(b.ok("GET", "/api/entities/product/p1", None)?["fields"]["name"], "Tea");
    Ok(())
}

#[test]
fn a_terminal_of_another_store_is_refused_with_a_clear_message_and_never_synced() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let c = TerminalProcess::start(&["--store-key", OTHER_KEY])?;
    put(&c, "product/secret", json!({"name": "not for a"}))?;
    for (from, to) in [(&a, &c), (&c, &a)] {
        let (status, body) = pair_call(from, &to.address(), None)?;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "not_a_store_terminal");
        assert!(body["error"]["message"].as_str().unwrap().contains("another store"), "{body}");
    }
    let devices = a.ok("GET", "/api/network/devices", None)?;
    assert!(device(&devices, &c.device_id()?).is_none(), "{devices}");
    assert_eq!(a.sync_now()?["peers"], json!([]));
    assert_eq!(a.call("GET", "/api/entities/product/secret", None)?.0, 404);
    // Nor can it pull by hand: its key does not open a session here.
    let refused = PeerSession::open(&a, OTHER_KEY, "intruder").err().unwrap().to_string();
    assert!(refused.contains("401") && refused.contains("not_a_member"), "{refused}");
    Ok(())
}

/// Serves a copy of `hello` under another device id, and a handshake that cannot
/// prove the store key: a LAN neighbour that copied the public store id.
async fn impostor(mut hello: HelloV1) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    hello.device_id = DeviceId::parse("impostor")?;
    hello.port = addr.port();
    let app = Router::new()
        .route("/peer/v1/hello", get(move || async move { Json(hello.clone()) }))
        .route(
            "/peer/v1/session",
            post(|| async {
                Json(json!({
                    "session_id": random_hex(16),
                    "server_nonce": random_hex(32),
                    "server_device": "impostor",
                }))
            }),
        )
        .route(
            "/peer/v1/session/confirm",
            post(|| async { Json(json!({"server_proof": random_hex(32), "idle_timeout_secs": 600})) }),
        )
        .route(
            "/peer/v1/pull",
            post(|| async {
                Json(json!({"device_id": "impostor", "changes": [], "next": 0, "has_more": false, "head": 0}))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr.to_string())
}

#[test]
fn a_peer_that_copies_the_public_store_id_but_cannot_prove_the_key_is_not_trusted() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let a = TerminalProcess::start(&[])?;
    let hello: HelloV1 = reqwest::blocking::get(format!("{}/peer/v1/hello", a.url))?.json()?;
    let addr = rt.block_on(impostor(hello))?;
    let (status, body) = pair_call(&a, &addr, None)?;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("store-key handshake") && message.contains("prove"), "{body}");
    let devices = a.ok("GET", "/api/network/devices", None)?;
    assert!(device(&devices, "impostor").is_none_or(|d| d["trusted"] == false), "{devices}");
    assert_eq!(a.sync_now()?["peers"], json!([]));
    Ok(())
}

#[test]
fn a_replayed_signed_request_is_refused() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let mut s = PeerSession::open(&a, STORE_KEY, "replayer")?;
    let body = s.pull_body();
    let headers = s.sign("/peer/v1/pull", &body);
    let first = s.post("/peer/v1/pull", &headers, &body)?;
    assert_eq!(first.status, 200, "{}", first.json);
    assert!(s.response_is_signed(&first), "the response carries the session's MAC");
    let again = s.post("/peer/v1/pull", &headers, &body)?;
    assert_eq!(again.status, 401, "{}", again.json);
    assert_eq!(again.json["error"]["code"], "replayed");
    // An older sequence number is refused too; a fresh one works.
    let newer = s.sign("/peer/v1/pull", &body);
    assert_eq!(s.post("/peer/v1/pull", &newer, &body)?.status, 200);
    assert_eq!(s.post("/peer/v1/pull", &headers, &body)?.status, 401);
    Ok(())
}

#[test]
fn a_puller_that_asks_for_lines_gets_the_same_batch_as_lines() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    for i in 0..5 {
        put(&a, &format!("product/p{i}"), json!({"name": format!("Item {i}"), "note": "two\nlines"}))?;
    }
    let mut s = PeerSession::open(&a, STORE_KEY, "line-reader")?;
    let body = s.pull_body();
    let headers = s.sign("/peer/v1/pull", &body);
    let plain = s.post("/peer/v1/pull", &headers, &body)?;
    assert_eq!(plain.status, 200, "{}", plain.json);
    assert!(plain.media.starts_with("application/json"), "{}", plain.media);
    let records = plain.json["changes"].as_array().expect("changes").clone();
    assert_eq!(records.len(), 5);

    let mut headers = s.sign("/peer/v1/pull", &body);
    headers.push(("accept", "application/x-ndjson, application/json;q=0.5".into()));
    let lines = s.post("/peer/v1/pull", &headers, &body)?;
    assert_eq!(lines.status, 200);
    assert_eq!(lines.media, "application/x-ndjson");
    assert!(s.response_is_signed(&lines), "an answer as lines is signed like any other");
    let text = String::from_utf8(lines.body)?;
    assert!(text.ends_with('\n'));
    let mut rows = text.lines();
    let header: Value = serde_json::from_str(rows.next().expect("header line"))?;
    assert_eq!(header["count"], 5);
    for field in ["device_id", "next", "has_more", "head", "log_epoch", "epoch_start"] {
        assert_eq!(header[field], plain.json[field], "{field}");
    }
    let got: Vec<Value> = rows.map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(got, records, "the same records, one per line");
    Ok(())
}

#[test]
fn a_signed_request_with_a_tampered_body_is_refused() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let mut s = PeerSession::open(&a, STORE_KEY, "tamperer")?;
    let body = s.pull_body();
    let headers = s.sign("/peer/v1/pull", &body);
    let tampered = String::from_utf8(body.clone())?.replace("\"after\":0", "\"after\":1").into_bytes();
    assert_ne!(tampered, body);
    let r = s.post("/peer/v1/pull", &headers, &tampered)?;
    assert_eq!(r.status, 401, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "bad_signature");
    // Signed for one path, sent to another: refused as well.
    let r = s.post("/peer/v1/pull?after=5", &headers, &body)?;
    assert_eq!(r.status, 401, "{}", r.json);
    Ok(())
}

#[test]
fn the_admin_token_is_not_accepted_on_the_peer_protocol() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/peer/v1/pull", a.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"device_id": "x", "after": 0, "limit": 10, "max_bytes": 1000, "known": {}}))
        .send()?;
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json()?;
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    // The old header-only scheme is gone too.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/peer/v1/pull", a.url))
        .header("x-tillmesh-store", "anything")
        .json(&json!({"device_id": "x", "after": 0, "limit": 10, "max_bytes": 1000, "known": {}}))
        .send()?;
    assert_eq!(r.status().as_u16(), 401);
    Ok(())
}

#[test]
fn a_new_terminal_joins_the_store_with_a_pairing_code_and_then_syncs() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let n = TerminalProcess::start(&["--store-key", OTHER_KEY])?;
    put(&a, "product/p1", json!({"name": "Tea"}))?;
    assert_eq!(pair_call(&n, &a.address(), None)?.0, 422, "no code, other store: refused");
    let issued = a.ok("GET", "/api/network/pairing-code", None)?;
    let code = issued["code"].as_str().unwrap();
    assert!(code.len() == 6 && code.bytes().all(|c| c.is_ascii_digit()), "{issued}");
    assert!(issued["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{issued}");

    let started = Instant::now();
    let paired = n.ok("POST", "/api/network/pair", Some(&json!({"address": a.address(), "code": code})))?;
    eprintln!("join took {:?}", started.elapsed());
    assert_eq!(paired["device_id"], a.device_id()?);
    assert_eq!(paired["trusted"], true);
    assert_eq!(std::fs::read_to_string(n.data_dir.join("store-key"))?.trim(), STORE_KEY);
    let hello = |t: &TerminalProcess| -> Result<Value> {
        Ok(reqwest::blocking::get(format!("{}/peer/v1/hello", t.url))?.json()?)
    };
    assert_eq!(hello(&n)?["store_id"], hello(&a)?["store_id"], "hot-swapped without a restart");

    sync_ok(&n)?;
    assert_eq!(n.ok("GET", "/api/entities/product/p1", None)?["fields"]["name"], "Tea");
    a.pair(&n)?;
    put(&n, "product/p2", json!({"name": "Cake"}))?;
    sync_ok(&a)?;
    assert_eq!(a.ok("GET", "/api/entities/product/p2", None)?["fields"]["name"], "Cake");
    assert_eq!(a.digest()?, n.digest()?);

    // The code was for one join only.
    let third = TerminalProcess::start(&["--store-key", "a-third-store-key-0000000000"])?;
    let (status, body) = pair_call(&third, &a.address(), Some(code))?;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "no_pairing_code");
    Ok(())
}

#[test]
fn five_wrong_pairing_codes_burn_the_code() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let n = TerminalProcess::start(&["--store-key", OTHER_KEY])?;
    let code = a.ok("GET", "/api/network/pairing-code", None)?["code"].as_str().unwrap().to_string();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let started = Instant::now();
    for i in 0..5 {
        let (status, body) = pair_call(&n, &a.address(), Some(wrong))?;
        assert_eq!(status, 403, "try {i}: {body}");
        assert_eq!(body["error"]["code"], "wrong_pairing_code");
    }
    assert!(started.elapsed() >= Duration::from_secs(4), "wrong guesses are slowed down");
    let (status, body) = pair_call(&n, &a.address(), Some(&code))?;
    assert_eq!(status, 410, "the right code no longer works once burned: {body}");
    assert_eq!(std::fs::read_to_string(n.data_dir.join("store-key"))?.trim(), OTHER_KEY);
    let (status, body) = pair_call(&n, &a.address(), Some("12ab"))?;
    assert_eq!(status, 400, "{body}");
    Ok(())
}

#[test]
fn every_management_endpoint_but_health_requires_the_admin_token() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    let doc = t.ok("GET", "/api/openapi.json", None)?;
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    // Listed here as well in case the document does not carry it yet.
    routes.push(("GET".into(), "/api/network/pairing-code".into()));
    assert!(routes.len() >= 20, "{routes:?}");
    let client = reqwest::blocking::Client::new();
    for (method, path) in &routes {
        let concrete: String =
            path.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>().join("/");
        let good = format!("Bearer {ADMIN_TOKEN}");
        for auth in [None, Some("Bearer wrong-token"), Some(good.as_str())] {
            let mut req = client
                .request(reqwest::Method::from_bytes(method.as_bytes())?, format!("{}{concrete}", t.url))
                .json(&json!({}));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send()?;
            let status = r.status().as_u16();
            if path == "/api/health" {
                assert_eq!(status, 200);
                break;
            }
            if auth == Some(good.as_str()) {
                assert_ne!(status, 401, "{method} {path} refuses the right token");
                continue;
            }
            assert_eq!(status, 401, "{method} {path} without a valid token");
            let body: Value = r.json()?;
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}: {body}");
        }
    }
    Ok(())
}

#[test]
fn malformed_peer_input_gets_a_client_error_and_never_a_server_error() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    put(&a, "product/p1", json!({"name": "Tea"}))?;
    let mut s = PeerSession::open(&a, STORE_KEY, "fuzzer")?;
    let huge = u64::MAX;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("garbage", b"\x00\xffnot json".to_vec(), None),
        ("empty", vec![], None),
        ("empty object", b"{}".to_vec(), None),
        ("deeply nested", deep.into_bytes(), None),
        ("negative position", json!({"device_id": "fuzzer", "after": -1, "limit": 1, "max_bytes": 1, "known": {}}).to_string().into_bytes(), None),
        ("float position", json!({"device_id": "fuzzer", "after": 1.5, "limit": 1, "max_bytes": 1, "known": {}}).to_string().into_bytes(), None),
        ("overflowing position", br#"{"device_id":"fuzzer","after":1e400,"limit":1,"max_bytes":1,"known":{}}"#.to_vec(), None),
        ("bad device id", json!({"device_id": "", "after": 0, "limit": 1, "max_bytes": 1, "known": {}}).to_string().into_bytes(), None),
        ("bad clock entry", json!({"device_id": "fuzzer", "after": 0, "limit": 1, "max_bytes": 1, "known": {"no spaces allowed": 1}}).to_string().into_bytes(), None),
        ("negative clock entry", json!({"device_id": "fuzzer", "after": 0, "limit": 1, "max_bytes": 1, "known": {"ghost": -5}}).to_string().into_bytes(), None),
        ("someone else's device", json!({"device_id": "someone-else", "after": 0, "limit": 1, "max_bytes": 1, "known": {}}).to_string().into_bytes(), None),
        // Valid but extreme: answered normally.
        ("huge values and unknown devices", json!({"device_id": "fuzzer", "after": huge, "limit": u32::MAX, "max_bytes": huge, "known": {"ghost": huge, "fuzzer": huge}}).to_string().into_bytes(), Some(200)),
        ("zero limits", json!({"device_id": "fuzzer", "after": 0, "limit": 0, "max_bytes": 0, "known": {}}).to_string().into_bytes(), Some(200)),
        ("oversized body", vec![b' '; (1 << 20) + 10], Some(413)),
    ];
    for (label, body, expected) in bodies {
        let headers = s.sign("/peer/v1/pull", &body);
        let r = s.post("/peer/v1/pull", &headers, &body)?;
        match expected {
            Some(code) => assert_eq!(r.status, code, "{label}: {}", r.json),
            None => assert!((400..500).contains(&r.status), "{label}: {} {}", r.status, r.json),
        }
        if r.status != 413 && r.status != 401 {
            assert!(s.response_is_signed(&r), "{label}: error answers are signed too");
        }
    }
    // The unauthenticated handshake and join endpoints: 4xx for anything malformed.
    let unauth: Vec<(&str, Vec<u8>)> = vec![
        ("/peer/v1/session", b"garbage".to_vec()),
        ("/peer/v1/session", json!({"client_device": "x", "client_nonce": "short"}).to_string().into_bytes()),
        (
            "/peer/v1/session",
            json!({"client_device": "bad id!", "client_nonce": random_hex(32)}).to_string().into_bytes(),
        ),
        ("/peer/v1/session", vec![b'{'; (1 << 20) + 10]),
        ("/peer/v1/session/confirm", json!({"session_id": "nope", "client_proof": "00"}).to_string().into_bytes()),
        ("/peer/v1/session/confirm", b"[]".to_vec()),
        ("/peer/v1/join/start", json!({"client_device": "x", "msg": "zz"}).to_string().into_bytes()),
        ("/peer/v1/join/start", json!({"client_device": "x", "msg": "00".repeat(33)}).to_string().into_bytes()),
        ("/peer/v1/join/finish", json!({"join_id": "nope", "confirm": "00"}).to_string().into_bytes()),
        ("/peer/v1/join/finish", b"{\"join_id\":".to_vec()),
    ];
    for (path, body) in unauth {
        let r = send(&s.http, &format!("{}{path}", a.url), &[], body)?;
        assert!((400..500).contains(&r.status), "{path}: {} {}", r.status, r.json);
        assert!(r.json["error"]["code"].is_string(), "{path}: JSON error shape: {}", r.json);
    }
    // The terminal is still fine.
    let body = s.pull_body();
    let headers = s.sign("/peer/v1/pull", &body);
    let r = s.post("/peer/v1/pull", &headers, &body)?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["changes"].as_array().map(Vec::len), Some(1));
    Ok(())
}

// ---------------------------------------------------------------- in-process peers

fn config(dir: &std::path::Path, listen: std::net::SocketAddr) -> tillmesh_app::Config {
    let mut c = tillmesh_tests::cluster::config_for(dir, 0).expect("harness config");
    c.listen = listen;
    c.name = Some("in-process".into());
    c
}

fn pull_request(device: &DeviceId) -> PullRequestV1 {
    PullRequestV1 {
        device_id: device.clone(),
        after: 0,
        limit: 100,
        max_bytes: 1 << 20,
        known: VectorClock::new(),
        port: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_handshakes_again_when_the_server_has_forgotten_its_session() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let t = tillmesh_app::Terminal::start(config(dir.path(), "127.0.0.1:0".parse()?)).await?;
    let addr = t.addr;
    let base = format!("http://{addr}");
    let me = DeviceId::parse("probe")?;
    let client = HttpTransport::new(StoreKey::new(STORE_KEY), me.clone())?;
    assert_eq!(client.verify_membership(&base).await?, t.state.device_id);
    client.pull(&base, &pull_request(&me)).await?;
    t.shutdown().await;
    // Same port, fresh process state: every session is gone.
    let t = tillmesh_app::Terminal::start(config(dir.path(), addr)).await?;
    let resp = client.pull(&base, &pull_request(&me)).await?;
    assert_eq!(resp.device_id, t.state.device_id);
    // A client holding another store's key gets nowhere.
    let other = HttpTransport::new(StoreKey::new(OTHER_KEY), me.clone())?;
    assert!(matches!(other.verify_membership(&base).await, Err(TransportError::Unauthorized(_))));
    assert!(matches!(other.pull(&base, &pull_request(&me)).await, Err(TransportError::Unauthorized(_))));
    t.shutdown().await;
    Ok(())
}

/// A store member built from the app's own authenticator that serves `resp` to every
/// pull, optionally with its body altered after signing (a man in the middle).
async fn member_serving(resp: PullResponseV1, tamper: bool) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let auth = Arc::new(PeerAuth::new(resp.device_id.clone(), StoreKey::new(STORE_KEY)));
    let resp = Arc::new(resp);
    let peer = Router::new()
        .route("/pull", post(move || async move { Json((*resp).clone()) }))
        .route_layer(middleware::from_fn_with_state(auth.clone(), peer_auth::require_session))
        .merge(peer_auth::routes(auth));
    let mut app = Router::new().nest("/peer/v1", peer);
    if tamper {
        app = app.layer(middleware::from_fn(|req: Request, next: Next| async move {
            let resp: Response = next.run(req).await;
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            let altered = String::from_utf8_lossy(&bytes).replace("\"head\":0", "\"head\":7");
            Response::from_parts(parts, axum::body::Body::from(altered))
        }));
    }
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_refuses_tampered_responses_and_oversized_batches() -> Result<()> {
    let me = DeviceId::parse("puller")?;
    let server = DeviceId::parse("server")?;
    let client = HttpTransport::new(StoreKey::new(STORE_KEY), me.clone())?;
    let empty = PullResponseV1 {
        covered: Default::default(),
        members: Vec::new(),
        device_id: server.clone(),
        changes: vec![],
        next: 0,
        has_more: false,
        head: 0,
        log_epoch: String::new(),
        epoch_start: 0,
    };

    let honest = member_serving(empty.clone(), false).await?;
    assert_eq!(client.pull(&honest, &pull_request(&me)).await?, empty);

    let tampered = member_serving(empty, true).await?;
    let e = client.pull(&tampered, &pull_request(&me)).await.err().unwrap();
    assert!(matches!(&e, TransportError::Protocol(m) if m.contains("not signed")), "{e}");

    let one = record(&server, 1, "p");
    let flood = PullResponseV1 {
        covered: Default::default(),
        members: Vec::new(),
        device_id: server,
        changes: vec![tillmesh_domain::EncodedChange::from(one); tillmesh_domain::wire::MAX_BATCH_SIZE + 1],
        next: 1,
        has_more: false,
        head: 1,
        log_epoch: String::new(),
        epoch_start: 0,
    };
    let big = member_serving(flood, false).await?;
    let e = client.pull(&big, &pull_request(&me)).await.err().unwrap();
    assert!(matches!(&e, TransportError::Protocol(m) if m.contains("over the limit")), "{e}");
    Ok(())
}

// ---------------------------------------------------------------- fuzzing

fn record(origin: &DeviceId, seq: u64, id: &str) -> ChangeRecord {
    let mut state = EntityState::default();
    let op = EntityOp::Put { fields: [("name".to_string(), Some(json!(id)))].into() };
    for _ in 0..seq {
        state.apply_local(&op, origin, Timestamp(1_700_000_000_000)).unwrap();
    }
    ChangeRecord::new(origin.clone(), seq, EntityKey::new("product", id).unwrap(), Timestamp(1), state)
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1.0e9f64..1.0e9).prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::collection::vec(any::<i32>(), 0..3).prop_map(|v| json!(v)),
    ]
}

fn arb_op() -> impl Strategy<Value = EntityOp> {
    prop_oneof![
        4 => prop::collection::btree_map("[a-z]{1,6}", arb_value().prop_map(Some), 1..4)
            .prop_map(|fields| EntityOp::Put { fields }),
        1 => ("[a-z]{1,6}", -1000i64..1000).prop_map(|(field, delta)| EntityOp::Counter { field: format!("c_{field}"), delta }),
        1 => Just(EntityOp::Delete),
    ]
}

/// A valid change record: a few local operations by one or two devices.
fn arb_record() -> impl Strategy<Value = ChangeRecord> {
    (
        "[a-z0-9]{1,10}",
        "[A-Za-z0-9_.-]{1,16}",
        prop::collection::vec((arb_op(), any::<bool>()), 1..5),
        0i64..4_000_000_000_000,
    )
        .prop_map(|(origin, id, ops, at)| {
            let origin = DeviceId::parse(origin).unwrap();
            let other = DeviceId::parse("zz-other").unwrap();
            let mut state = EntityState::default();
            for (op, by_other) in &ops {
                let by = if *by_other { &other } else { &origin };
                // Ops that mix field kinds are refused by the domain; skip those.
                let _ = state.apply_local(op, by, Timestamp(at));
            }
            let _ = state.apply_local(
                &EntityOp::Put { fields: [("last".to_string(), Some(json!(1)))].into() },
                &origin,
                Timestamp(at),
            );
            let seq = state.context.get(&origin);
            ChangeRecord::new(origin, seq, EntityKey::new("product", id).unwrap(), Timestamp(at), state)
        })
}

/// Decodes like the puller does: the batch, then every record's full check.
fn decode_and_verify(bytes: &[u8]) {
    if let Ok(resp) = serde_json::from_slice::<PullResponseV1>(bytes) {
        for mut c in resp.changes {
            let _ = c.check();
            let _ = c.into_verified();
        }
    }
    if let Ok(c) = serde_json::from_slice::<ChangeRecord>(bytes) {
        let _ = c.verify();
    }
}

proptest! {
    #[test]
    fn fuzz_random_bytes_never_panic_the_pull_response_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_and_verify(&bytes);
    }

    #[test]
    fn fuzz_mutated_pull_responses_never_panic_the_decoder(
        recs in prop::collection::vec(arb_record(), 1..3),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let resp = PullResponseV1 {
            covered: Default::default(),
            members: Vec::new(),
            device_id: recs[0].origin.clone(),
            changes: recs.into_iter().map(Into::into).collect(),
            next: 3,
            has_more: false,
            head: 3,
            log_epoch: String::new(),
            epoch_start: 0,
        };
        let mut bytes = serde_json::to_vec(&resp).unwrap();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        decode_and_verify(&bytes);
    }

    #[test]
    fn fuzz_a_single_byte_mutation_of_a_record_fails_to_decode_fails_verify_or_changes_nothing(
        rec in arb_record(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        prop_assert!(rec.verify().is_ok());
        let bytes = serde_json::to_vec(&rec).unwrap();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        let mut mutated = bytes.clone();
        mutated[i] = byte;
        if let Ok(decoded) = serde_json::from_slice::<ChangeRecord>(&mutated) {
            prop_assert!(
                decoded.verify().is_err() || decoded == rec,
                "byte {} set to {:?} gives another record that verifies: {}",
                i, byte as char, String::from_utf8_lossy(&mutated)
            );
        }
    }
}
