//! Tests specific to the durable file store: reopening, rejected batches leaving the
//! file untouched, concurrent writers, and the connection set-up.

mod common;

use std::collections::BTreeSet;

use serde_json::json;
use tillmesh_domain::ports::{DeviceStore, EntityStore, NotificationStore, QueueStore, StoreError, SyncStore};
use tillmesh_domain::queue::{NewOperation, Notification, OperationStatus};
use tillmesh_domain::{DomainError, VectorClock};
use tillmesh_store_sqlite::SqliteStore;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_everything() {
    let a = Backend::File.node("a").await;
    let peer = Backend::Memory.node("peer").await;
    write(&peer, vec![(key("product", "p9"), put(&[("name", json!("Remote"))]))], 1).await;
    pull(&peer, &a).await;
    write(
        &a,
        vec![(key("product", "p1"), put(&[("name", json!("Tea"))])), (key("stock", "p1"), counter("qty", 12))],
        2,
    )
    .await;
    a.store.record_sync_result(&peer.id, ts(3), None).await.expect("record");
    a.store
        .enqueue(NewOperation {
            id: "op1".into(),
            kind: "http_post".into(),
            target: "t".into(),
            payload: json!({"a": 1}),
            max_retries: 5,
            created_at: ts(4),
        })
        .await
        .expect("enqueue");
    assert!(a.store.mark_processing("op1").await.expect("claim"));
    a.store
        .add_notification(Notification {
            id: "n1".into(),
            kind: "k".into(),
            message: "m".into(),
            operation_id: None,
            created_at: ts(5),
            acknowledged: false,
        })
        .await
        .expect("notify");

    let digest_before = digest(&a).await;
    let log_before = a.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("log");
    let peer_before = a.store.peer_state(&peer.id).await.expect("peer");
    let known_before = a.store.known_origins().await.expect("known");
    let path = a.path().expect("file node");
    let Node { store, dir, .. } = a;
    drop(store);

    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(reopened.digest().await.expect("digest"), digest_before);
    assert_eq!(reopened.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("log"), log_before);
    assert_eq!(log_before.changes.len(), 3);
    assert_eq!(reopened.peer_state(&peer.id).await.expect("peer"), peer_before);
    assert_eq!(peer_before.last_sync, Some(ts(3)));
    assert_eq!(reopened.known_origins().await.expect("known"), known_before);
    assert_eq!(reopened.local_device_id(device("other")).await.expect("id"), device("a"));
    let op = reopened.operation("op1").await.expect("read").expect("op1");
    assert_eq!(op.status, OperationStatus::Processing);
    assert_eq!(reopened.recover_processing().await.expect("recover"), 1);
    assert_eq!(reopened.notifications(10).await.expect("list").len(), 1);
    // Writing continues the sequence where it stopped.
    let out = reopened
        .apply_local(&device("a"), vec![(key("product", "p2"), put(&[("n", json!(1))]))], ts(6))
        .await
        .expect("write");
    assert_eq!(out.seqs, vec![3]);
    assert_eq!(reopened.log_head().await.expect("head"), 4);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_remote_batch_leaves_the_file_untouched() {
    let a = Backend::Memory.node("a").await;
    let b = Backend::File.node("b").await;
    let ops = (0..50).map(|i| (key("item", &format!("i{i}")), put(&[("n", json!(i))]))).collect();
    write(&a, ops, 1).await;
    let page = a.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
    // The last record of the batch is corrupt: nothing before it may land either.
    let mut changes = page.changes.clone();
    let last = changes.last_mut().expect("non-empty");
    let mut record = last.to_record().expect("record");
    record.at = ts(record.at.0 + 1);
    *last = record.into();
    let err = b.store.apply_remote(&a.id, changes, page.next, page.head, None, None).await.expect_err("bad batch");
    assert!(matches!(err, StoreError::BadBatch(DomainError::ChecksumMismatch { seq: 50, .. })));

    let path = b.path().expect("file node");
    let Node { store, dir, .. } = b;
    drop(store);
    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(reopened.log_head().await.expect("head"), 0);
    assert_eq!(reopened.digest().await.expect("digest").entities, 0);
    assert!(reopened.known_origins().await.expect("known").is_empty());
    assert_eq!(reopened.peer_state(&a.id).await.expect("peer").cursor, 0);
    assert!(reopened.peer_states().await.expect("peers").is_empty());
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_local_writes_lose_nothing() {
    let node = Backend::File.node("a").await;
    let shared = key("stock", "shared");
    let mut tasks = Vec::new();
    for t in 0..16_i64 {
        let store = node.store.clone();
        let id = node.id.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200_i64 {
                let op = match i % 4 {
                    // The shared counter: every task adds t + 1.
                    0 | 1 => (shared.clone(), counter("qty", t + 1)),
                    // A field of the shared entity each task owns alone.
                    2 => (shared.clone(), put(&[(&format!("last_{t}"), json!(i))])),
                    // The task's own entities.
                    _ => (key("item", &format!("t{t}-{}", (i / 4) % 10)), put(&[("i", json!(i))])),
                };
                store.apply_local(&id, vec![op], ts(i)).await.expect("concurrent write");
            }
        }));
    }
    // Readers run beside the writers.
    let reader = {
        let store = node.store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..50 {
                let head = store.log_head().await.expect("head");
                assert!(head >= last, "the log never shrinks");
                last = head;
                store.digest().await.expect("digest");
            }
        })
    };
    for t in tasks {
        t.await.expect("writer task");
    }
    reader.await.expect("reader task");

    assert_eq!(node.store.known_origins().await.expect("known"), VectorClock::from_entries([(node.id.clone(), 3_200)]));
    // The log keeps each entity's latest record: one per entity, each with its own
    // sequence number.
    let (mut seqs, mut keys, mut records) = (BTreeSet::new(), BTreeSet::new(), 0);
    let mut after = 0;
    loop {
        let page = node.store.changes_after(after, 1_000, usize::MAX, &VectorClock::new()).await.expect("page");
        records += page.changes.len();
        seqs.extend(page.changes.iter().map(|c| c.seq));
        keys.extend(page.changes.iter().map(|c| c.key.clone()));
        after = page.next;
        if !page.has_more {
            break;
        }
    }
    let entities = node.store.digest().await.expect("digest").entities as usize;
    assert_eq!(
        (records, keys.len(), seqs.len()),
        (entities, entities, entities),
        "one record per entity, no duplicates"
    );
    assert!(seqs.iter().all(|s| (1..=3_200).contains(s)));
    // 100 increments per task of t + 1: 100 × (1 + … + 16).
    assert_eq!(visible(&node, &shared, "qty").await, Some(json!(13_600)));
    let state = node.store.entity(&shared).await.expect("read").expect("shared");
    for t in 0..16 {
        assert_eq!(state.view().fields.get(&format!("last_{t}")), Some(&json!(198)));
    }
    assert_eq!(digest(&node).await.entities, 1 + 16 * 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_uses_wal_and_two_handles_see_each_other() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("shared.db");
    let first = SqliteStore::open(&path).expect("open");
    let second = SqliteStore::open(&path).expect("open again (migrations already applied)");
    let a = device("a");
    first.apply_local(&a, vec![(key("x", "1"), put(&[("n", json!(1))]))], ts(1)).await.expect("write");
    assert_eq!(second.log_head().await.expect("head"), 1);
    second
        .apply_local(&a, vec![(key("x", "2"), put(&[("n", json!(2))]))], ts(2))
        .await
        .expect("write through the other handle");
    assert_eq!(first.digest().await.expect("digest"), second.digest().await.expect("digest"));
    assert!(dir.path().join("shared.db-wal").exists(), "the file runs in WAL mode");
}

/// With `synchronous = NORMAL`, a commit is durable once the WAL is synced, which
/// SQLite does at checkpoints; the store checkpoints in the background soon after
/// commits. Seen from outside: the database file alone, without its WAL, soon holds
/// the write. (SQLite's own automatic checkpoint would wait for ~1,000 pages.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_reaches_the_main_file_without_waiting_for_more_writes() {
    let node = Backend::File.node("a").await;
    write(&node, vec![(key("sale", "s1"), put(&[("total", json!(1250))]))], 1).await;
    let copies = tempfile::tempdir().expect("dir");
    let main = node.path().expect("file store");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // A copy of the main file only: what a power cut would leave if the WAL's
        // unsynced tail were lost.
        let copy = copies.path().join(format!("copy-{attempt}.db"));
        std::fs::copy(&main, &copy).expect("copy the database file");
        let held = match SqliteStore::open(&copy) {
            Ok(store) => store.entity(&key("sale", "s1")).await.ok().flatten().is_some(),
            Err(_) => false, // copied in the middle of a checkpoint; try again
        };
        if held {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the write never left the WAL ({attempt} copies)");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn open_fails_cleanly_for_a_missing_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let err = SqliteStore::open(&dir.path().join("missing").join("x.db")).expect_err("no dir");
    assert!(matches!(err, StoreError::Unexpected(_)), "got {err:?}");
}
