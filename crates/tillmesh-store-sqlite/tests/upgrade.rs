//! A data dir written by schema 1 (entity states and records in protocol 1's JSON, the
//! state stored in every entity row) opens with this build: the migrations run, and
//! the old rows read, digest, serve and take new writes as if written now.

mod common;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::{json, Map, Value};
use tillmesh_domain::digest::entity_hash;
use tillmesh_domain::ports::{DeviceStore, EntityStore, SyncStore};
use tillmesh_domain::{ChangeRecord, DeviceId, EntityKey, EntityState, Timestamp, VectorClock};
use tillmesh_store_sqlite::SqliteStore;

use common::*;

/// Protocol 1's JSON of a dot.
fn dot_v1(d: &tillmesh_domain::Dot) -> Value {
    json!({"device": d.device.as_str(), "counter": d.counter})
}

/// Protocol 1's JSON of a state: every dot spelled out, registers as `{"entries": [...]}`.
fn state_v1(s: &EntityState) -> Value {
    let alive: Vec<Value> = s.alive.iter().map(|(d, at)| json!({"dot": dot_v1(d), "at": at.0})).collect();
    let mut fields = Map::new();
    for (name, f) in &s.fields {
        let mut field = Map::new();
        if !f.register.entries.is_empty() {
            let entries: Vec<Value> = f
                .register
                .entries
                .iter()
                .map(|(d, e)| json!({"dot": dot_v1(d), "value": e.value, "at": e.at.0}))
                .collect();
            field.insert("register".into(), json!({ "entries": entries }));
        }
        if f.counter != Default::default() {
            field.insert("counter".into(), serde_json::to_value(&f.counter).expect("counter"));
        }
        fields.insert(name.clone(), Value::Object(field));
    }
    json!({"context": s.context, "alive": alive, "fields": fields})
}

fn record_v1(r: &ChangeRecord) -> String {
    json!({"origin": r.origin.as_str(), "seq": r.seq, "key": r.key, "at": r.at.0, "state": state_v1(&r.state),
           "checksum": r.checksum.to_hex()})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_data_dir_opens_and_keeps_working() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("old.db");
    let writer = DeviceId::parse("till-old.0123456789abcdef").expect("id");

    // Two changes as the old build made them: a product put, then a stock count.
    let key = EntityKey::new("product", "p1").expect("key");
    let mut state = EntityState::default();
    state.apply_local(&put(&[("name", json!("Tea")), ("price", json!(250))]), &writer, Timestamp(10)).expect("put");
    let first = ChangeRecord::new(writer.clone(), 1, key.clone(), Timestamp(10), state.clone());
    state.apply_local(&counter("stock", 7), &writer, Timestamp(11)).expect("count");
    let second = ChangeRecord::new(writer.clone(), 2, key.clone(), Timestamp(11), state.clone());

    {
        let mut conn = SqliteConnection::establish(&path.display().to_string()).expect("create");
        conn.batch_execute(include_str!("../../../migrations/2026-11-25-000000_init/up.sql")).expect("schema 1");
        conn.batch_execute(
            "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
             INSERT INTO __diesel_schema_migrations (version) VALUES ('20261125000000'); \
             INSERT INTO local_identity VALUES (1, 'till-old'); \
             INSERT INTO origin_progress VALUES ('till-old.0123456789abcdef', 2);",
        )
        .expect("schema 1 bookkeeping");
        for (pos, r) in [(1, &first), (2, &second)] {
            let text = record_v1(r);
            diesel::sql_query("INSERT INTO change_log VALUES (?, ?, ?, 'product', 'p1', ?, ?)")
                .bind::<diesel::sql_types::BigInt, _>(pos)
                .bind::<diesel::sql_types::Text, _>(r.origin.as_str())
                .bind::<diesel::sql_types::BigInt, _>(r.seq as i64)
                .bind::<diesel::sql_types::Text, _>(&text)
                .bind::<diesel::sql_types::BigInt, _>(text.len() as i64)
                .execute(&mut conn)
                .expect("log row");
        }
        diesel::sql_query("INSERT INTO entities VALUES ('product', 'p1', ?, ?, 0, 2)")
            .bind::<diesel::sql_types::Text, _>(state_v1(&state).to_string())
            .bind::<diesel::sql_types::Binary, _>(entity_hash(&key, &state).as_bytes().to_vec())
            .execute(&mut conn)
            .expect("entity row");
    }

    let store = SqliteStore::open(&path).expect("opens and migrates");
    assert_eq!(store.local_device_id(device("ignored")).await.expect("identity").as_str(), "till-old");
    assert_eq!(store.entity(&key).await.expect("read"), Some(state.clone()));
    assert_eq!(store.known_origins().await.expect("known").get(&writer), 2);

    // The log is compacted on the way up (schema 5): the second record includes the
    // first, which goes. What is left is served, verifies, and brings a fresh store to
    // the same digest.
    let page = store.changes_after(0, 10, 1 << 20, &VectorClock::new()).await.expect("serve");
    assert_eq!(page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(store.log_head().await.expect("head"), 2, "positions are not reused");
    assert_eq!(store.covered().await.expect("covered").get(&writer), 2, "coverage starts from what was held");
    for c in &page.changes {
        c.clone().check().expect("an old record still verifies");
    }
    let fresh = Backend::File.node("fresh").await;
    fresh.store.apply_remote(&device("till-old"), page.changes, page.next, page.head, None, None).await.expect("apply");
    assert_eq!(fresh.store.digest().await.expect("digest"), store.digest().await.expect("digest"));

    // New writes on the old entity, by this build's writer, and a reopen.
    let now = device("till-new");
    store.apply_local(&now, vec![(key.clone(), counter("stock", -2))], ts(20)).await.expect("write");
    drop(store);
    let store = SqliteStore::open(&path).expect("reopens");
    let view = store.entity(&key).await.expect("read").expect("exists").view();
    assert_eq!((view.fields["name"].clone(), view.fields["stock"].clone()), (json!("Tea"), json!(5)));
    assert_eq!(store.log_head().await.expect("head"), 3);
    let page = store.changes_after(0, 10, 1 << 20, &VectorClock::new()).await.expect("serve");
    assert_eq!(page.changes.len(), 1, "the new write supersedes the old record");
    drop(dir);
}

/// Schema 3 leaves this terminal's own records out of the `(origin, seq)` index: a
/// schema 2 log (made here, then migrated down) gets them flagged on the way up, so
/// they still count as held and the sequence continues after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_log_gets_its_own_records_flagged() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("v2.db");
    let peer = Backend::Memory.node("till-b").await;
    write(&peer, vec![(key("item", "b1"), put(&[("n", json!(1))]))], 1).await;
    {
        let store = SqliteStore::open(&path).expect("open");
        let here = Node { id: store.local_device_id(device("till-a")).await.expect("identity"), store, dir: None };
        write(&here, vec![(key("item", "a1"), put(&[("n", json!(1))]))], 2).await;
        pull(&peer, &here).await;
        write(&here, vec![(key("item", "a2"), put(&[("n", json!(2))]))], 3).await;
    }
    {
        let mut conn = SqliteConnection::establish(&path.display().to_string()).expect("connect");
        conn.batch_execute(include_str!("../../../migrations/2026-11-26-000000_own_records/down.sql"))
            .expect("schema 3 down");
        conn.batch_execute("DELETE FROM __diesel_schema_migrations WHERE version = '20261126000000';")
            .expect("forget schema 3");
    }
    let store = SqliteStore::open(&path).expect("migrates up again");
    let here = Node { id: device("till-a"), store, dir: None };
    // Everything here, served with no known vector, comes back as duplicates.
    let page = here.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
    assert_eq!(page.changes.len(), 3);
    let echo = here.store.apply_remote(&peer.id, page.changes, page.next, page.head, None, None).await.expect("echo");
    assert_eq!((echo.applied, echo.duplicates), (0, 3));
    assert_eq!(write(&here, vec![(key("item", "a3"), put(&[("n", json!(3))]))], 4).await.seqs, vec![3]);
    drop(here);
    let mut conn = SqliteConnection::establish(&path.display().to_string()).expect("connect");
    let flags: Vec<(String, i64, bool)> = diesel::sql_query("SELECT origin, seq, own FROM change_log ORDER BY pos")
        .load::<OwnRow>(&mut conn)
        .expect("rows")
        .into_iter()
        .map(|r| (r.origin, r.seq, r.own))
        .collect();
    let expected = [("till-a", 1, true), ("till-b", 1, false), ("till-a", 2, true), ("till-a", 3, true)];
    assert_eq!(flags, expected.map(|(o, s, f)| (o.to_string(), s, f)).to_vec());
}

#[derive(diesel::QueryableByName)]
struct OwnRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    origin: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    own: bool,
}
