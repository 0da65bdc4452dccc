//! Test helpers shared by the integration tests: terminals ("nodes") on either
//! back-end, op builders, and a pull loop that syncs one store from another the way
//! the app does.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use tempfile::TempDir;
use tillmesh_domain::ports::{ApplyOutcome, DeviceStore, EntityStore, StoreDigest, SyncStore};
use tillmesh_domain::{DeviceId, EntityKey, EntityOp, EntityState, Timestamp};
use tillmesh_store_sqlite::SqliteStore;

/// Which implementation a contract test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// A database file in a fresh temporary directory.
    File,
    /// `SqliteStore::open_in_memory`.
    Memory,
}

/// One terminal: a store and its device id (kept alive with its temp dir).
pub struct Node {
    pub store: SqliteStore,
    pub id: DeviceId,
    pub dir: Option<TempDir>,
}

impl Node {
    /// The database file of a file-backed node.
    pub fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("store.db"))
    }
}

impl Backend {
    /// A fresh terminal called `name`, its id stored as the local identity.
    pub async fn node(self, name: &str) -> Node {
        let (store, dir) = match self {
            Backend::File => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = SqliteStore::open(&dir.path().join("store.db")).expect("open file store");
                (store, Some(dir))
            }
            Backend::Memory => (SqliteStore::open_in_memory().expect("open memory store"), None),
        };
        let id = device(name);
        let stored = store.local_device_id(id.clone()).await.expect("local device id");
        assert_eq!(stored, id);
        Node { store, id, dir }
    }
}

pub fn device(name: &str) -> DeviceId {
    DeviceId::parse(name).expect("valid device id")
}

pub fn key(t: &str, id: &str) -> EntityKey {
    EntityKey::new(t, id).expect("valid key")
}

pub fn ts(ms: i64) -> Timestamp {
    Timestamp(ms)
}

/// A put of the given fields.
pub fn put(fields: &[(&str, Value)]) -> EntityOp {
    EntityOp::Put {
        fields: fields.iter().map(|(k, v)| ((*k).to_string(), Some(v.clone()))).collect::<BTreeMap<_, _>>(),
    }
}

pub fn counter(field: &str, delta: i64) -> EntityOp {
    EntityOp::Counter { field: field.to_string(), delta }
}

/// Writes one batch on `node` and returns the outcome.
pub async fn write(node: &Node, ops: Vec<(EntityKey, EntityOp)>, at: i64) -> tillmesh_domain::ports::LocalOutcome {
    node.store.apply_local(&node.id, ops, ts(at)).await.expect("local write")
}

/// What a reader sees of one field.
pub async fn visible(node: &Node, k: &EntityKey, field: &str) -> Option<Value> {
    let state = node.store.entity(k).await.expect("read entity")?;
    state.view().fields.get(field).cloned()
}

/// Pulls everything `to` lacks from `from`, page by page, as the app's sync loop
/// does: resume from the stored cursor, send the known vector. Returns the sums.
pub async fn pull(from: &Node, to: &Node) -> ApplyOutcome {
    pull_pages(from, to, 100, 1 << 20).await
}

pub async fn pull_pages(from: &Node, to: &Node, limit: usize, max_bytes: usize) -> ApplyOutcome {
    match pull_at_most(from, to, limit, max_bytes, 100_000).await {
        (total, true) => total,
        (_, false) => panic!("pull did not finish"),
    }
}

/// At most `pages` pages of [`pull_pages`]; also whether the pull reached `from`'s head.
pub async fn pull_at_most(
    from: &Node,
    to: &Node,
    limit: usize,
    max_bytes: usize,
    pages: usize,
) -> (ApplyOutcome, bool) {
    let mut total = ApplyOutcome::default();
    for _ in 0..pages {
        let cursor = to.store.peer_state(&from.id).await.expect("peer state").cursor;
        let known = to.store.covered().await.expect("coverage");
        let page = from.store.changes_after(cursor, limit, max_bytes, &known).await.expect("changes after");
        let covered = (!page.has_more).then(|| page.covered.clone());
        let out = to
            .store
            .apply_remote(&from.id, page.changes, page.next, page.head, covered, None)
            .await
            .expect("apply remote");
        total.applied += out.applied;
        total.duplicates += out.duplicates;
        total.new_conflicts.extend(out.new_conflicts);
        if !page.has_more {
            return (total, true);
        }
    }
    (total, false)
}

pub async fn digest(node: &Node) -> StoreDigest {
    node.store.digest().await.expect("digest")
}

/// Every entity of one type, in id order.
pub async fn all_of(node: &Node, t: &str) -> Vec<(EntityKey, EntityState)> {
    node.store.list_entities(t, None, 100_000).await.expect("list entities")
}
