//! A peer that serves a batch with a bad checksum: the batch is rejected whole, the
//! cursor does not move, and the error shows in `/api/sync/progress`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use anyhow::Result;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tillmesh_domain::wire::{HelloV1, PullResponseV1, PROTOCOL_VERSION};
use tillmesh_domain::{ChangeRecord, DeviceId, EntityKey, EntityOp, EntityState, Timestamp};
use tillmesh_tests::TerminalProcess;

fn record(origin: &DeviceId, seq: u64, id: &str) -> ChangeRecord {
    let mut state = EntityState::default();
    let op = EntityOp::Put { fields: [("name".to_string(), Some(json!(id)))].into() };
    for _ in 0..seq {
        state.apply_local(&op, origin, Timestamp(1_700_000_000_000)).unwrap();
    }
    ChangeRecord::new(origin.clone(), seq, EntityKey::new("product", id).unwrap(), Timestamp(1), state)
}

/// Serves hello + pull as a terminal of the test store would, with one tampered record.
async fn fake_peer(store_id: String) -> Result<String> {
    let me = DeviceId::parse("fake-peer")?;
    let mut changes = vec![record(&me, 1, "good1"), record(&me, 2, "good2"), record(&me, 3, "bad")];
    changes[2].state.fields.clear(); // content changed after the checksum was computed
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hello = HelloV1 {
        service: "tillmesh".into(),
        device_id: me.clone(),
        name: "fake".into(),
        protocol: PROTOCOL_VERSION,
        store_id,
        port: addr.port(),
    };
    let resp = Arc::new(PullResponseV1 { device_id: me, changes, next: 3, has_more: false, head: 3 });
    let app = Router::new()
        .route("/peer/v1/hello", get(move || async move { Json(hello.clone()) }))
        .route("/peer/v1/pull", post(move || async move { Json((*resp).clone()) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_with_a_bad_checksum_is_rejected_whole() -> Result<()> {
    let t = tokio::task::spawn_blocking(|| TerminalProcess::start(&[])).await??;
    let t = Arc::new(t);
    // The public store id is what hello advertises; read it from the terminal's own hello.
    let hello: serde_json::Value = reqwest::get(format!("{}/peer/v1/hello", t.url)).await?.json().await?;
    let store_id = hello["store_id"].as_str().unwrap().to_string();
    let addr = fake_peer(store_id).await?;
    let t2 = t.clone();
    let (before, progress, after) = tokio::task::spawn_blocking(move || -> Result<_> {
        let before = t2.digest()?;
        t2.ok("POST", "/api/network/pair", Some(&json!({ "address": addr })))?;
        let r = t2.sync_now()?;
        assert!(r["peers"][0]["error"].as_str().unwrap().contains("checksum"), "{r}");
        Ok((before, t2.ok("GET", "/api/sync/progress", None)?, t2.digest()?))
    })
    .await??;
    assert_eq!(before, after, "nothing of the batch was applied");
    let peer = &progress["peers"][0];
    assert!(peer["last_error"].as_str().unwrap().contains("checksum"), "{progress}");
    assert_eq!(peer["pending_changes"], 0, "cursor not advanced, peer head never recorded");
    assert!(peer["last_sync"].is_null());
    Ok(())
}
