//! Conformance suite of the storage ports: every case runs against both
//! `SqliteStore::open` (a temp file) and `SqliteStore::open_in_memory`.

mod common;

/// Instantiates every case for both back-ends.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::cases::$name(super::common::Backend::File).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::cases::$name(super::common::Backend::Memory).await;
                }
            )*
        }
    };
}

contract!(
    local_write_then_read,
    created_flag_is_per_op,
    batch_is_atomic,
    seq_numbering_spans_batches,
    list_entities_pages_by_id,
    changes_after_pages_by_limit,
    changes_after_respects_max_bytes,
    changes_after_skips_known,
    changes_after_bounds_the_scan,
    apply_remote_replicates_state,
    duplicates_are_noops,
    held_changes_inside_a_large_batch_leave_no_gaps,
    own_records_echoed_back_are_duplicates,
    own_records_received_back_after_data_loss_continue_the_sequence,
    tampered_batch_is_rejected_whole,
    records_over_the_size_cap_are_refused_at_write_and_at_receipt,
    concurrent_writes_conflict_then_resolve,
    counter_decrements_from_two_stores_both_count,
    delete_is_observed_remove,
    relay_a_to_b_to_c,
    new_entities_are_stored_as_received_and_read_back_alike,
    sync_results_and_peer_states,
    device_identity,
    a_writer_is_kept_until_retired_and_never_taken_twice,
    device_registry_rules,
    queue_lifecycle,
    outbox_is_queued_with_the_batch_or_not_at_all,
    writes_queued_together_fail_alone,
    queue_cas_under_contention,
    queue_listing_and_stats,
    notifications_lifecycle,
);

mod cases {
    use std::collections::BTreeSet;

    use serde_json::json;
    use tillmesh_domain::device::{DeviceRecord, DeviceSource};
    use tillmesh_domain::ports::{DeviceStore, EntityStore, NotificationStore, QueueStore, StoreError, SyncStore};
    use tillmesh_domain::queue::{NewOperation, Notification, OperationStatus};
    use tillmesh_domain::{DomainError, EntityOp, VectorClock};

    use super::common::*;

    pub async fn local_write_then_read(b: Backend) {
        let a = b.node("a").await;
        let k = key("product", "p1");
        let out = write(&a, vec![(k.clone(), put(&[("name", json!("Tea")), ("price", json!(250))]))], 1_000).await;
        assert_eq!(out.entities.len(), 1);
        assert_eq!(out.seqs, vec![1]);
        let (ok, state, created) = &out.entities[0];
        assert_eq!(ok, &k);
        assert!(created);
        // The log holds the record, verifiable, with the state the write returned.
        let page = a.store.changes_after(0, 10, 1 << 20, &VectorClock::new()).await.expect("log");
        let [r] = page.changes.as_slice() else { panic!("one record expected, got {:?}", page.changes) };
        assert_eq!((r.origin.clone(), r.seq, r.key.clone()), (a.id.clone(), 1, k.clone()));
        let record = r.to_record().expect("whole record");
        assert_eq!(&record.state, state);
        record.verify().expect("record verifies");
        r.clone().check().expect("record verifies as received");

        let stored = a.store.entity(&k).await.expect("read").expect("exists");
        assert_eq!(&stored, state);
        let view = stored.view();
        assert_eq!(view.fields.get("name"), Some(&json!("Tea")));
        assert_eq!(view.fields.get("price"), Some(&json!(250)));
        assert!(!view.deleted);
        assert_eq!(a.store.entity(&key("product", "nope")).await.expect("read"), None);

        // An update of one field keeps the other.
        let out = write(&a, vec![(k.clone(), put(&[("price", json!(300))]))], 2_000).await;
        assert!(!out.entities[0].2, "second write does not create");
        assert_eq!(visible(&a, &k, "price").await, Some(json!(300)));
        assert_eq!(visible(&a, &k, "name").await, Some(json!("Tea")));

        assert_eq!(a.store.log_head().await.expect("head"), 2);
        assert_eq!(a.store.known_origins().await.expect("known"), VectorClock::from_entries([(a.id.clone(), 2)]));
        let d = digest(&a).await;
        assert_eq!((d.entities, d.open_conflicts), (1, 0));
    }

    pub async fn created_flag_is_per_op(b: Backend) {
        let a = b.node("a").await;
        let (k1, k2) = (key("product", "p1"), key("product", "p2"));
        write(&a, vec![(k2.clone(), put(&[("x", json!(1))]))], 1).await;
        let out = write(
            &a,
            vec![
                (k1.clone(), put(&[("x", json!(1))])),
                (k1.clone(), put(&[("x", json!(2))])),
                (k2.clone(), put(&[("x", json!(3))])),
            ],
            2,
        )
        .await;
        let created: Vec<bool> = out.entities.iter().map(|e| e.2).collect();
        assert_eq!(created, vec![true, false, false]);
        // Each op's reported state is the state right after that op.
        assert_eq!(out.entities[0].1.view().fields.get("x"), Some(&json!(1)));
        assert_eq!(out.entities[1].1.view().fields.get("x"), Some(&json!(2)));
        assert_eq!(visible(&a, &k1, "x").await, Some(json!(2)));
        assert_eq!(visible(&a, &k2, "x").await, Some(json!(3)));
    }

    pub async fn batch_is_atomic(b: Backend) {
        let a = b.node("a").await;
        let existing = key("stock", "s0");
        write(&a, vec![(existing.clone(), put(&[("name", json!("old"))]))], 1).await;
        let before = digest(&a).await;
        let before_state = a.store.entity(&existing).await.expect("read");

        let (k1, k2) = (key("stock", "s1"), key("stock", "s2"));
        let err = a
            .store
            .apply_local(
                &a.id,
                vec![
                    (k1.clone(), put(&[("name", json!("flour"))])),
                    (existing.clone(), put(&[("name", json!("new"))])),
                    (k2.clone(), counter("qty", 5)),
                    // Kind mismatch: qty became a counter in the previous op.
                    (k2.clone(), put(&[("qty", json!(9))])),
                ],
                ts(2),
            )
            .await
            .expect_err("batch must be rejected");
        assert!(matches!(err, StoreError::Rejected(DomainError::FieldKindMismatch { .. })), "got {err:?}");
        assert_eq!(a.store.entity(&k1).await.expect("read"), None);
        assert_eq!(a.store.entity(&k2).await.expect("read"), None);
        assert_eq!(a.store.entity(&existing).await.expect("read"), before_state);
        assert_eq!(a.store.log_head().await.expect("head"), 1, "no log rows");
        assert_eq!(digest(&a).await, before);
        assert_eq!(a.store.known_origins().await.expect("known"), VectorClock::from_entries([(a.id.clone(), 1)]));
        // The next write continues the sequence with no gap.
        let out = write(&a, vec![(k1.clone(), put(&[("name", json!("x"))]))], 3).await;
        assert_eq!(out.seqs[0], 2);
        // An invalid name is rejected too.
        let bad = EntityOp::Put { fields: [("bad name".to_string(), Some(json!(1)))].into_iter().collect() };
        let err = a.store.apply_local(&a.id, vec![(k1, bad)], ts(4)).await.expect_err("invalid field name");
        assert!(matches!(err, StoreError::Rejected(DomainError::InvalidName { .. })));
        assert_eq!(a.store.log_head().await.expect("head"), 2);
    }

    pub async fn seq_numbering_spans_batches(b: Backend) {
        let a = b.node("a").await;
        let mut seqs = Vec::new();
        for batch in 0..3 {
            let ops = (0..4).map(|i| (key("item", &format!("i{batch}-{i}")), put(&[("n", json!(i))]))).collect();
            let out = write(&a, ops, 10 + batch).await;
            seqs.extend(out.seqs.iter().copied());
        }
        assert_eq!(seqs, (1..=12).collect::<Vec<u64>>());
        let page = a.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        assert_eq!(page.changes.len(), 12);
        assert_eq!(page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs);
        assert!(page.changes.iter().all(|c| c.origin == a.id));
        for c in &page.changes {
            c.clone().check().expect("stored records keep their checksum");
            c.to_record().expect("whole record").verify().expect("and verify decoded");
        }
        assert_eq!((page.next, page.head, page.has_more), (12, 12, false));
    }

    pub async fn list_entities_pages_by_id(b: Backend) {
        let a = b.node("a").await;
        let ops = ["c", "a", "e", "b", "d"]
            .iter()
            .map(|id| (key("product", id), put(&[("n", json!(id))])))
            .chain([(key("other", "z"), put(&[("n", json!(0))]))])
            .collect();
        write(&a, ops, 1).await;
        let ids = |v: Vec<(tillmesh_domain::EntityKey, tillmesh_domain::EntityState)>| {
            v.into_iter().map(|(k, _)| k.entity_id().to_string()).collect::<Vec<_>>()
        };
        let first = a.store.list_entities("product", None, 2).await.expect("list");
        assert_eq!(ids(first), vec!["a", "b"]);
        let next = a.store.list_entities("product", Some("b".into()), 2).await.expect("list");
        assert_eq!(ids(next), vec!["c", "d"]);
        let rest = a.store.list_entities("product", Some("d".into()), 10).await.expect("list");
        assert_eq!(ids(rest), vec!["e"]);
        let other = a.store.list_entities("other", None, 10).await.expect("list");
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].1.view().fields.get("n"), Some(&json!(0)));
        assert!(a.store.list_entities("none", None, 10).await.expect("list").is_empty());
    }

    pub async fn changes_after_pages_by_limit(b: Backend) {
        let a = b.node("a").await;
        let ops = (0..10).map(|i| (key("item", &format!("i{i}")), put(&[("n", json!(i))]))).collect();
        write(&a, ops, 1).await;
        let none = VectorClock::new();
        let mut after = 0;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = a.store.changes_after(after, 3, usize::MAX, &none).await.expect("page");
            pages += 1;
            assert!(page.changes.len() <= 3);
            assert_eq!(page.head, 10);
            seen.extend(page.changes.iter().map(|c| c.seq));
            assert_eq!(page.next, *seen.last().expect("non-empty page"));
            after = page.next;
            if !page.has_more {
                break;
            }
        }
        assert_eq!(pages, 4);
        assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
        // At the end: nothing more, position unchanged.
        let end = a.store.changes_after(10, 3, usize::MAX, &none).await.expect("page");
        assert!(end.changes.is_empty());
        assert_eq!((end.next, end.has_more, end.head), (10, false, 10));
        // Beyond the end (a confused puller): empty, not an error.
        let beyond = a.store.changes_after(99, 3, usize::MAX, &none).await.expect("page");
        assert!(beyond.changes.is_empty());
        assert!(!beyond.has_more);
    }

    pub async fn changes_after_respects_max_bytes(b: Backend) {
        let a = b.node("a").await;
        let ops = (0..6).map(|i| (key("item", &format!("i{i}")), put(&[("n", json!("x".repeat(100)))]))).collect();
        write(&a, ops, 1).await;
        let none = VectorClock::new();
        // A budget below one record still returns one change per page.
        let page = a.store.changes_after(0, 100, 1, &none).await.expect("page");
        assert_eq!(page.changes.len(), 1);
        assert_eq!((page.next, page.has_more), (1, true));
        // A budget of two records' JSON size returns two.
        let one = serde_json::to_string(&page.changes[0]).expect("json").len();
        let page = a.store.changes_after(0, 100, 2 * one + 1, &none).await.expect("page");
        assert_eq!(page.changes.len(), 2);
        assert_eq!((page.next, page.has_more), (2, true));
        // A small page size still reaches everything.
        let target = b.node("b").await;
        let out = pull_pages(&a, &target, 100, 1).await;
        assert_eq!(out.applied, 6);
        assert_eq!(digest(&a).await, digest(&target).await);
    }

    pub async fn changes_after_skips_known(b: Backend) {
        let a = b.node("a").await;
        let other = b.node("o").await;
        // a's log interleaves its own changes with relayed ones of o.
        write(&other, vec![(key("x", "o1"), put(&[("n", json!(1))]))], 1).await;
        write(&a, vec![(key("x", "a1"), put(&[("n", json!(1))]))], 2).await;
        write(&other, vec![(key("x", "o2"), put(&[("n", json!(2))]))], 3).await;
        pull(&other, &a).await;
        write(&a, vec![(key("x", "a2"), put(&[("n", json!(2))]))], 4).await;
        // Log: a1 (a#1), o1 (o#1), o2 (o#2), a2 (a#2).
        assert_eq!(a.store.log_head().await.expect("head"), 4);

        let known = VectorClock::from_entries([(other.id.clone(), 2)]);
        let page = a.store.changes_after(0, 100, usize::MAX, &known).await.expect("page");
        let got: Vec<(String, u64)> = page.changes.iter().map(|c| (c.origin.to_string(), c.seq)).collect();
        assert_eq!(got, vec![("a".into(), 1), ("a".into(), 2)]);
        assert_eq!((page.next, page.has_more), (4, false));

        // Skipped rows still advance `next`, even when the page holds nothing.
        let all = VectorClock::from_entries([(other.id.clone(), 2), (a.id.clone(), 2)]);
        let page = a.store.changes_after(0, 1, usize::MAX, &all).await.expect("page");
        assert!(page.changes.is_empty());
        assert_eq!((page.next, page.has_more, page.head), (4, false, 4));

        // With limit 1, skipped rows before the first returned change are consumed.
        let known = VectorClock::from_entries([(a.id.clone(), 1)]);
        let page = a.store.changes_after(0, 1, usize::MAX, &known).await.expect("page");
        assert_eq!(page.changes.len(), 1);
        assert_eq!((page.changes[0].origin.clone(), page.changes[0].seq), (other.id.clone(), 1));
        assert_eq!((page.next, page.has_more), (2, true));
    }

    pub async fn changes_after_bounds_the_scan(b: Backend) {
        let a = b.node("a").await;
        let ops = (0..1_500).map(|i| (key("item", &format!("i{i}")), counter("qty", 1))).collect();
        write(&a, ops, 1).await;
        let all = a.store.known_origins().await.expect("known");
        // A puller that knows everything: empty pages, advancing by bounded scans.
        let page = a.store.changes_after(0, 10, usize::MAX, &all).await.expect("page");
        assert!(page.changes.is_empty());
        assert_eq!((page.next, page.has_more, page.head), (1_000, true, 1_500));
        let page = a.store.changes_after(page.next, 10, usize::MAX, &all).await.expect("page");
        assert!(page.changes.is_empty());
        assert_eq!((page.next, page.has_more), (1_500, false));
    }

    /// Records for entities the store does not hold yet are stored without decoding
    /// their state (when it is in the written form); whatever the batching, what is
    /// read back, the digest and the conflicts equal the source's.
    pub async fn new_entities_are_stored_as_received_and_read_back_alike(b: Backend) {
        let (a, c, p) =
            (Backend::Memory.node("a").await, Backend::Memory.node("c").await, Backend::Memory.node("p").await);
        let (x, y, z, s) = (key("product", "x1"), key("product", "y1"), key("product", "z1"), key("stock", "s1"));
        write(&a, vec![(x.clone(), put(&[("name", json!("Tea"))]))], 1).await;
        write(&c, vec![(x.clone(), put(&[("name", json!("Coffee"))]))], 2).await;
        pull(&a, &p).await;
        pull(&c, &p).await;
        // p's record of x carries both competing names.
        write(&p, vec![(x.clone(), put(&[("price", json!(2.5))]))], 3).await;
        write(&p, vec![(y.clone(), put(&[("name", json!("Gone"))]))], 4).await;
        write(&p, vec![(y.clone(), EntityOp::Delete)], 5).await;
        write(&p, vec![(z.clone(), put(&[("name", json!("v1"))])), (z.clone(), put(&[("name", json!("v2"))]))], 6)
            .await;
        write(&p, vec![(s.clone(), counter("qty", 5)), (s.clone(), counter("qty", -2))], 7).await;
        assert_eq!(p.store.open_conflicts().await.expect("conflicts").len(), 1);

        for page in [100, 1] {
            let r = b.node("r").await;
            let out = pull_pages(&p, &r, page, 1 << 20).await;
            assert_eq!(out.new_conflicts.len(), 1, "page size {page}");
            assert_eq!(digest(&r).await, digest(&p).await, "page size {page}");
            for k in [&x, &y, &z, &s] {
                let (got, want) = (r.store.entity(k).await.expect("read"), p.store.entity(k).await.expect("read"));
                assert_eq!(got, want, "{k:?}, page size {page}");
            }
            assert!(r.store.entity(&y).await.expect("read").expect("held").is_deleted());
            assert_eq!(visible(&r, &z, "name").await, Some(json!("v2")));
            assert_eq!(
                r.store.open_conflicts().await.expect("conflicts"),
                p.store.open_conflicts().await.expect("conflicts")
            );
            assert_eq!(all_of(&r, "product").await, all_of(&p, "product").await);
        }
    }

    /// Writes that queue behind a long one share its successor's transaction; one
    /// that fails (half-way, after its first op wrote) undoes only itself.
    pub async fn writes_queued_together_fail_alone(b: Backend) {
        let a = b.node("a").await;
        let price = key("product", "p0");
        write(&a, vec![(price.clone(), put(&[("name", json!("Tea"))]))], 1).await;
        let before = digest(&a).await;
        // A long batch holds the writer while the small writes queue up.
        let long: Vec<_> = (0..5_000).map(|i| (key("bulk", &format!("b{i}")), put(&[("n", json!(i))]))).collect();
        let long = {
            let (store, id) = (a.store.clone(), a.id.clone());
            tokio::spawn(async move { store.apply_local(&id, long, ts(2)).await })
        };
        let mut small = Vec::new();
        for i in 0..24_i64 {
            let (store, id) = (a.store.clone(), a.id.clone());
            let ok_key = key("item", &format!("i{i}"));
            let ops = if i % 3 == 0 {
                // Its first op writes, its second is refused: "name" is no counter.
                vec![(ok_key, put(&[("n", json!(i))])), (price.clone(), counter("name", 1))]
            } else {
                vec![(ok_key, put(&[("n", json!(i))]))]
            };
            small.push(tokio::spawn(async move { (i, store.apply_local(&id, ops, ts(3 + i)).await) }));
        }
        long.await.expect("task").expect("the long batch");
        for t in small {
            let (i, result) = t.await.expect("task");
            if i % 3 == 0 {
                assert!(matches!(result, Err(StoreError::Rejected(_))), "write {i}: {result:?}");
            } else {
                assert_eq!(result.expect("a good write").seqs.len(), 1, "write {i}");
            }
        }
        // Exactly the good writes are there, with contiguous sequence numbers.
        let items = all_of(&a, "item").await;
        let ids: BTreeSet<String> = items.iter().map(|(k, _)| k.entity_id().to_string()).collect();
        let expected: BTreeSet<String> = (0..24).filter(|i| i % 3 != 0).map(|i| format!("i{i}")).collect();
        assert_eq!(ids, expected);
        assert_eq!(a.store.log_head().await.expect("head"), 1 + 5_000 + 16);
        assert_eq!(a.store.known_origins().await.expect("known").get(&a.id), 1 + 5_000 + 16);
        assert_eq!(visible(&a, &price, "name").await, Some(json!("Tea")));
        assert_ne!(digest(&a).await, before);
    }

    pub async fn apply_remote_replicates_state(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        write(
            &a,
            vec![
                (key("product", "p1"), put(&[("name", json!("Tea")), ("price", json!(2.5))])),
                (key("product", "p2"), put(&[("name", json!("Cake")), ("tags", json!(["x", {"y": [1, 2]}]))])),
                (key("stock", "p1"), counter("qty", 40)),
            ],
            1,
        )
        .await;
        write(&a, vec![(key("stock", "p1"), counter("qty", -3))], 2).await;
        write(&a, vec![(key("product", "p2"), EntityOp::Delete)], 3).await;

        // The log keeps each entity's latest record only: three, not five.
        let out = pull(&a, &bb).await;
        assert_eq!((out.applied, out.duplicates), (3, 0));
        assert!(out.new_conflicts.is_empty());
        assert_eq!(digest(&a).await, digest(&bb).await);
        let d = digest(&bb).await;
        assert_eq!((d.entities, d.open_conflicts), (3, 0));
        for t in ["product", "stock"] {
            assert_eq!(all_of(&a, t).await, all_of(&bb, t).await);
        }
        assert_eq!(visible(&bb, &key("stock", "p1"), "qty").await, Some(json!(37)));
        let p2 = bb.store.entity(&key("product", "p2")).await.expect("read").expect("tombstone");
        assert!(p2.is_deleted());
        // The receiver relays: its log holds a's records with a's origin and seqs.
        assert_eq!(bb.store.log_head().await.expect("head"), 3);
        assert_eq!(bb.store.known_origins().await.expect("known"), a.store.known_origins().await.expect("known"));
        // Having reached a's head, b holds everything a covers.
        assert_eq!(bb.store.covered().await.expect("covered"), VectorClock::from_entries([(a.id.clone(), 5)]));
        let st = bb.store.peer_state(&a.id).await.expect("peer");
        assert_eq!((st.cursor, st.peer_head), (5, 5));
        // Local writes on the receiver get its own sequence, from 1.
        let own = write(&bb, vec![(key("product", "p3"), put(&[("n", json!(1))]))], 4).await;
        assert_eq!(own.seqs, vec![1]);
        let head = bb.store.log_head().await.expect("head");
        let last = bb.store.changes_after(head - 1, 1, 1 << 20, &VectorClock::new()).await.expect("log");
        assert_eq!((last.changes[0].origin.clone(), last.changes[0].seq), (bb.id.clone(), 1));
    }

    pub async fn duplicates_are_noops(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let ops = (0..5).map(|i| (key("item", &format!("i{i}")), put(&[("n", json!(i))]))).collect();
        write(&a, ops, 1).await;
        let page = a.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        let first =
            bb.store.apply_remote(&a.id, page.changes.clone(), page.next, page.head, None, None).await.expect("apply");
        assert_eq!((first.applied, first.duplicates), (5, 0));
        let d1 = digest(&bb).await;
        let again = bb
            .store
            .apply_remote(&a.id, page.changes.clone(), page.next, page.head, None, None)
            .await
            .expect("apply again");
        assert_eq!((again.applied, again.duplicates), (0, 5));
        assert!(again.new_conflicts.is_empty());
        assert_eq!(digest(&bb).await, d1);
        assert_eq!(bb.store.log_head().await.expect("head"), 5);
        // A batch mixing held and new changes applies only the new ones.
        write(&a, vec![(key("item", "i9"), put(&[("n", json!(9))]))], 2).await;
        let page = a.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        let mixed =
            bb.store.apply_remote(&a.id, page.changes, page.next, page.head, None, None).await.expect("apply mixed");
        assert_eq!((mixed.applied, mixed.duplicates), (1, 5));
        assert_eq!(digest(&bb).await, digest(&a).await);
    }

    /// Received changes are appended many per statement; a held change among them
    /// sends its statement's changes one by one, so the log keeps contiguous positions
    /// and a peer pulling it page by page misses nothing.
    pub async fn held_changes_inside_a_large_batch_leave_no_gaps(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let cc = b.node("c").await;
        let ops = (0..50).map(|i| (key("item", &format!("i{i:02}")), put(&[("n", json!(i))]))).collect();
        write(&a, ops, 1).await;
        let page = a.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        assert_eq!(page.changes.len(), 50);
        // The first 20 arrive first (say, relayed by another peer): of the batch's
        // statements of 16, the first holds only held changes, the second some.
        let early: Vec<_> = page.changes[..20].to_vec();
        let first = bb.store.apply_remote(&a.id, early, 0, 0, None, None).await.expect("apply some");
        assert_eq!((first.applied, first.duplicates), (20, 0));
        let all =
            bb.store.apply_remote(&a.id, page.changes, page.next, page.head, None, None).await.expect("apply all");
        assert_eq!((all.applied, all.duplicates), (30, 20));
        assert_eq!(bb.store.log_head().await.expect("head"), 50);
        let log = bb.store.changes_after(0, 1000, usize::MAX, &VectorClock::new()).await.expect("log");
        assert_eq!((log.changes.len(), log.next), (50, 50), "positions 1..=50, no gaps");
        let seqs: BTreeSet<u64> = log.changes.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=50).collect(), "every change once");
        assert_eq!(digest(&bb).await, digest(&a).await);
        pull_pages(&bb, &cc, 7, usize::MAX).await;
        assert_eq!(digest(&cc).await, digest(&a).await);
    }

    /// This terminal's own records are held by sequence (they are not in the
    /// `(origin, seq)` index): echoed back by a peer, they are duplicates.
    pub async fn own_records_echoed_back_are_duplicates(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let ops = (0..5).map(|i| (key("item", &format!("i{i}")), put(&[("n", json!(i))]))).collect();
        write(&a, ops, 1).await;
        write(&bb, vec![(key("item", "b0"), put(&[("n", json!(0))]))], 2).await;
        pull(&a, &bb).await;
        let before = digest(&a).await;
        // Everything b holds, a's own records included (no known vector to skip them).
        let page = bb.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        assert_eq!(page.changes.len(), 6);
        let echo =
            a.store.apply_remote(&bb.id, page.changes.clone(), page.next, page.head, None, None).await.expect("apply");
        assert_eq!((echo.applied, echo.duplicates), (1, 5));
        assert_eq!(a.store.log_head().await.expect("head"), 6, "only b's record was appended");
        let again =
            a.store.apply_remote(&bb.id, page.changes, page.next, page.head, None, None).await.expect("apply again");
        assert_eq!((again.applied, again.duplicates), (0, 6));
        assert_eq!(digest(&a).await, digest(&bb).await);
        assert_ne!(digest(&a).await, before);
        // The next local write continues a's own sequence.
        let out = write(&a, vec![(key("item", "i0"), put(&[("n", json!(10))]))], 3).await;
        assert_eq!(out.seqs, vec![6]);
    }

    /// A terminal that lost its data (same identity, empty store) takes its own
    /// records back from a peer and numbers its next write after them, so the peer
    /// does not mistake that write for one it holds.
    pub async fn own_records_received_back_after_data_loss_continue_the_sequence(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let ops = (0..3).map(|i| (key("item", &format!("i{i}")), put(&[("n", json!(i))]))).collect();
        write(&a, ops, 1).await;
        pull(&a, &bb).await;
        drop(a);
        let a = b.node("a").await;
        let back = pull(&bb, &a).await;
        assert_eq!((back.applied, back.duplicates), (3, 0));
        assert_eq!(a.store.known_origins().await.expect("known"), VectorClock::from_entries([(a.id.clone(), 3)]));
        let page = bb.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        let again =
            a.store.apply_remote(&bb.id, page.changes, page.next, page.head, None, None).await.expect("apply again");
        assert_eq!((again.applied, again.duplicates), (0, 3));
        let out = write(&a, vec![(key("item", "i9"), put(&[("n", json!(9))]))], 2).await;
        assert_eq!(out.seqs, vec![4]);
        let to_b = pull(&a, &bb).await;
        assert_eq!(to_b.applied, 1);
        assert_eq!(digest(&a).await, digest(&bb).await);
    }

    pub async fn records_over_the_size_cap_are_refused_at_write_and_at_receipt(b: Backend) {
        use tillmesh_domain::change::MAX_RECORD_BYTES;
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let k = key("product", "big");
        write(&a, vec![(k.clone(), put(&[("name", json!("Tea"))]))], 1).await;
        let before = digest(&a).await;
        // A value just under the cap fits the field but not the record around it.
        let too_big = json!("x".repeat(MAX_RECORD_BYTES));
        let err = a
            .store
            .apply_local(
                &a.id,
                vec![(key("sale", "s1"), put(&[("n", json!(1))])), (k.clone(), put(&[("desc", too_big)]))],
                ts(2),
            )
            .await
            .expect_err("over the cap");
        assert!(
            matches!(&err, StoreError::Rejected(DomainError::TooLarge { entity, max, .. }) if entity == "product/big" && *max == MAX_RECORD_BYTES),
            "got {err:?}"
        );
        assert_eq!(digest(&a).await, before, "nothing of the batch was applied");
        assert_eq!(a.store.log_head().await.expect("head"), 1);
        // Half the cap is fine.
        write(&a, vec![(k.clone(), put(&[("desc", json!("y".repeat(MAX_RECORD_BYTES / 2)))]))], 3).await;

        // A record over the cap made elsewhere (an older build, a broken peer) is refused
        // on receipt: nothing of its batch is applied, the cursor stays.
        let page = a.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        let mut record = page.changes[0].to_record().expect("record");
        let f = record.state.fields.get_mut("name").expect("field");
        for e in f.register.entries.values_mut() {
            e.value = json!("z".repeat(MAX_RECORD_BYTES + 1));
        }
        record.checksum = tillmesh_domain::calculate_checksum(&record);
        record.verify().expect("checksum and invariants are fine: only the size is wrong");
        let err = bb
            .store
            .apply_remote(&a.id, vec![record.into()], page.next, page.head, None, None)
            .await
            .expect_err("over the cap");
        assert!(matches!(err, StoreError::BadBatch(DomainError::TooLarge { .. })), "got {err:?}");
        assert!(err.to_string().contains("product/big"), "the error names the entity: {err}");
        assert_eq!(digest(&bb).await.entities, 0);
        assert_eq!(bb.store.peer_state(&a.id).await.expect("peer").cursor, 0);
        pull(&a, &bb).await;
        assert_eq!(digest(&bb).await, digest(&a).await);
    }

    pub async fn a_writer_is_kept_until_retired_and_never_taken_twice(b: Backend) {
        use tillmesh_domain::ports::WriterRecord;
        let a = b.node("a").await;
        let peer = b.node("p").await;
        assert_eq!(a.store.writer().await.expect("writer"), None, "none before the first take");
        write(&a, vec![(key("item", "before"), put(&[("n", json!(0))]))], 1).await;
        let w = device("a.0001");
        let taken = a.store.take_writer(w.clone(), "m1".into(), None).await.expect("take");
        assert_eq!(taken, WriterRecord { writer: w.clone(), marker: "m1".into(), since: 1, retired: false });
        assert_eq!(a.store.writer().await.expect("writer"), Some(taken.clone()));
        let out =
            a.store.apply_local(&w, vec![(key("item", "i1"), put(&[("n", json!(1))]))], ts(2)).await.expect("write");
        assert_eq!(out.seqs, vec![1]);
        let err = a.store.take_writer(w.clone(), "m2".into(), None).await.expect_err("taken twice");
        assert!(matches!(err, StoreError::InvalidState(_)), "got {err:?}");

        // A peer that holds no more than the log does not retire it.
        assert!(!a.store.note_held_elsewhere(&w, 1).await.expect("note"));
        assert!(!a.store.note_held_elsewhere(&device("someone.else"), 99).await.expect("note"));
        // A peer holding more does, and a write under it is refused with nothing written.
        assert!(a.store.note_held_elsewhere(&w, 2).await.expect("note"));
        assert!(a.store.writer().await.expect("writer").expect("some").retired);
        let head = a.store.log_head().await.expect("head");
        let err = a
            .store
            .apply_local(&w, vec![(key("item", "i2"), put(&[("n", json!(2))]))], ts(3))
            .await
            .expect_err("retired");
        assert!(matches!(err, StoreError::WriterRetired(_)), "got {err:?}");
        assert_eq!(a.store.log_head().await.expect("head"), head);
        let next = a.store.take_writer(device("a.0002"), "m1".into(), Some(0)).await.expect("new writer");
        assert_eq!((next.since, next.retired), (0, false));
        a.store
            .apply_local(&next.writer, vec![(key("item", "i2"), put(&[("n", json!(2))]))], ts(3))
            .await
            .expect("write");

        // Receiving a change of the current writer beyond the log's retires it too.
        let w3 = device("p.0003");
        peer.store.take_writer(w3.clone(), "pm".into(), None).await.expect("take");
        for i in 0..3 {
            peer.store
                .apply_local(&w3, vec![(key("thing", &format!("t{i}")), put(&[("n", json!(i))]))], ts(4))
                .await
                .expect("write");
        }
        let page = peer.store.changes_after(0, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        // `peer` plays a terminal whose log lost t1 and t2 (a rollback its marker missed).
        let lost = peer.store.changes_after(1, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        let fresh = b.node("p2").await;
        fresh.store.apply_remote(&peer.id, page.changes[..1].to_vec(), 1, 1, None, None).await.expect("first");
        fresh.store.take_writer(w3.clone(), "pm2".into(), None).await.expect_err("held already");
        let rolled_back = b.node("p3").await;
        rolled_back.store.take_writer(w3.clone(), "pm".into(), None).await.expect("take");
        rolled_back
            .store
            .apply_local(&w3, vec![(key("thing", "t0"), put(&[("n", json!(0))]))], ts(4))
            .await
            .expect("write");
        let out = rolled_back
            .store
            .apply_remote(&peer.id, lost.changes, lost.next, lost.head, None, None)
            .await
            .expect("apply");
        assert!(out.writer_retired, "the outcome says so, so the app takes a new writer at once");
        assert!(rolled_back.store.writer().await.expect("writer").expect("some").retired, "a peer held more of it");
    }

    pub async fn tampered_batch_is_rejected_whole(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        write(&a, vec![(key("item", "i0"), put(&[("n", json!(0))]))], 1).await;
        pull(&a, &bb).await;
        let before = digest(&bb).await;
        let cursor_before = bb.store.peer_state(&a.id).await.expect("peer");
        assert_eq!(cursor_before.cursor, 1);

        let ops = (1..4).map(|i| (key("item", &format!("i{i}")), put(&[("n", json!(i))]))).collect();
        write(&a, ops, 2).await;
        let page = a.store.changes_after(1, 100, usize::MAX, &VectorClock::new()).await.expect("page");
        assert_eq!(page.changes.len(), 3);

        // Change a value after the checksum was computed.
        let mut tampered = page.changes.clone();
        let mut record = tampered[1].to_record().expect("record");
        let f = record.state.fields.get_mut("n").expect("field n");
        for e in f.register.entries.values_mut() {
            e.value = json!(666);
        }
        tampered[1] = record.into();
        let err =
            bb.store.apply_remote(&a.id, tampered, page.next, page.head, None, None).await.expect_err("tampered batch");
        assert!(matches!(err, StoreError::BadBatch(DomainError::ChecksumMismatch { seq: 3, .. })), "got {err:?}");
        // A record whose checksum matches but breaks invariants (seq 0) is rejected too.
        let mut bad = page.changes[2].to_record().expect("record");
        bad.seq = 0;
        bad.checksum = tillmesh_domain::calculate_checksum(&bad);
        let bad = bad.into();
        let err = bb
            .store
            .apply_remote(&a.id, vec![page.changes[0].clone(), bad], page.next, page.head, None, None)
            .await
            .expect_err("invalid record");
        assert!(matches!(err, StoreError::BadBatch(DomainError::InvalidRecord(_))));

        assert_eq!(digest(&bb).await, before, "nothing applied");
        assert_eq!(bb.store.log_head().await.expect("head"), 1);
        assert_eq!(bb.store.entity(&key("item", "i1")).await.expect("read"), None);
        assert_eq!(bb.store.peer_state(&a.id).await.expect("peer"), cursor_before);
        // The genuine batch still applies afterwards.
        let ok =
            bb.store.apply_remote(&a.id, page.changes, page.next, page.head, None, None).await.expect("genuine batch");
        assert_eq!(ok.applied, 3);
        assert_eq!(digest(&bb).await, digest(&a).await);
    }

    pub async fn concurrent_writes_conflict_then_resolve(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let k = key("product", "p1");
        write(&a, vec![(k.clone(), put(&[("name", json!("Tea")), ("price", json!(100))]))], 1).await;
        pull(&a, &bb).await;
        // Concurrent writes: same field, different values; plus a different field.
        write(&a, vec![(k.clone(), put(&[("price", json!(120))]))], 10).await;
        write(&bb, vec![(k.clone(), put(&[("price", json!(130)), ("name", json!("Green tea"))]))], 11).await;

        let to_b = pull(&a, &bb).await;
        let to_a = pull(&bb, &a).await;
        assert_eq!(to_b.new_conflicts.len(), 1);
        assert_eq!(to_a.new_conflicts.len(), 1);
        assert_eq!(to_a.new_conflicts[0].id, to_b.new_conflicts[0].id);

        let ca = a.store.open_conflicts().await.expect("conflicts");
        let cb = bb.store.open_conflicts().await.expect("conflicts");
        assert_eq!(ca.len(), 1);
        assert_eq!(ca, cb);
        let c = &ca[0];
        assert_eq!((c.key.clone(), c.field.as_str()), (k.clone(), "price"));
        let values: BTreeSet<String> = c.values.iter().map(|v| v.value.to_string()).collect();
        assert_eq!(values, BTreeSet::from(["120".to_string(), "130".to_string()]));
        // Provisional value: the latest writer time (b's, at 11).
        assert_eq!(c.provisional, json!(130));
        assert_eq!(visible(&a, &k, "price").await, Some(json!(130)));
        assert_eq!(visible(&a, &k, "name").await, Some(json!("Green tea")));
        assert_eq!(a.store.conflict(&c.id).await.expect("conflict").as_ref(), Some(c));
        let (da, db) = (digest(&a).await, digest(&bb).await);
        assert_eq!(da, db);
        assert_eq!(da.open_conflicts, 1);

        // Re-syncing reports nothing new.
        assert!(pull(&a, &bb).await.new_conflicts.is_empty());

        // A write that saw both values resolves it everywhere.
        write(&a, vec![(k.clone(), put(&[("price", json!(125))]))], 20).await;
        assert!(a.store.open_conflicts().await.expect("conflicts").is_empty());
        let out = pull(&a, &bb).await;
        assert_eq!(out.applied, 1);
        assert!(out.new_conflicts.is_empty());
        pull(&bb, &a).await;
        for n in [&a, &bb] {
            assert!(n.store.open_conflicts().await.expect("conflicts").is_empty());
            assert_eq!(n.store.conflict(&c.id).await.expect("conflict"), None);
            assert_eq!(visible(n, &k, "price").await, Some(json!(125)));
        }
        let (da, db) = (digest(&a).await, digest(&bb).await);
        assert_eq!(da, db);
        assert_eq!(da.open_conflicts, 0);
    }

    pub async fn counter_decrements_from_two_stores_both_count(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let k = key("stock", "s1");
        write(&a, vec![(k.clone(), counter("qty", 10))], 1).await;
        pull(&a, &bb).await;
        write(&a, vec![(k.clone(), counter("qty", -2))], 2).await;
        write(&bb, vec![(k.clone(), counter("qty", -3))], 2).await;
        write(&bb, vec![(k.clone(), counter("qty", -1))], 3).await;
        pull(&a, &bb).await;
        pull(&bb, &a).await;
        for n in [&a, &bb] {
            assert_eq!(visible(n, &k, "qty").await, Some(json!(4)));
        }
        assert_eq!(digest(&a).await, digest(&bb).await);
        assert_eq!(digest(&a).await.open_conflicts, 0, "counters never conflict");
    }

    pub async fn delete_is_observed_remove(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let k = key("product", "p1");
        write(&a, vec![(k.clone(), put(&[("name", json!("Tea"))]))], 1).await;
        pull(&a, &bb).await;
        // a deletes while b concurrently updates: b's unseen write survives.
        write(&a, vec![(k.clone(), EntityOp::Delete)], 2).await;
        write(&bb, vec![(k.clone(), put(&[("price", json!(5))]))], 3).await;
        pull(&a, &bb).await;
        pull(&bb, &a).await;
        for n in [&a, &bb] {
            let s = n.store.entity(&k).await.expect("read").expect("exists");
            assert!(!s.is_deleted());
            assert_eq!(s.view().fields.get("price"), Some(&json!(5)));
            assert_eq!(s.view().fields.get("name"), None);
        }
        // A delete that saw everything wins everywhere.
        write(&bb, vec![(k.clone(), EntityOp::Delete)], 4).await;
        pull(&bb, &a).await;
        let s = a.store.entity(&k).await.expect("read").expect("tombstone");
        assert!(s.is_deleted());
        assert_eq!(digest(&a).await, digest(&bb).await);
        assert_eq!(digest(&a).await.entities, 1, "tombstones count");
    }

    pub async fn relay_a_to_b_to_c(b: Backend) {
        let a = b.node("a").await;
        let bb = b.node("b").await;
        let c = b.node("c").await;
        let ops = (0..7).map(|i| (key("item", &format!("a{i}")), put(&[("n", json!(i))]))).collect();
        write(&a, ops, 1).await;
        pull(&a, &bb).await;
        write(&bb, vec![(key("item", "b0"), counter("qty", 3))], 2).await;
        // c never talks to a, yet gets a's changes through b, with a's identity.
        let out = pull_pages(&bb, &c, 3, 1 << 20).await;
        assert_eq!(out.applied, 8);
        assert_eq!(digest(&c).await, digest(&bb).await);
        let known = c.store.known_origins().await.expect("known");
        assert_eq!(known.get(&a.id), 7);
        assert_eq!(known.get(&bb.id), 1);
        // Later, c meets a directly: a skips everything c already holds.
        write(&a, vec![(key("item", "a7"), put(&[("n", json!(7))]))], 3).await;
        let direct = pull(&a, &c).await;
        assert_eq!((direct.applied, direct.duplicates), (1, 0));
        assert_eq!(c.store.peer_state(&a.id).await.expect("peer").cursor, 8);
        pull(&c, &bb).await;
        pull(&bb, &a).await;
        let (da, db, dc) = (digest(&a).await, digest(&bb).await, digest(&c).await);
        assert_eq!(da, db);
        assert_eq!(db, dc);
        assert_eq!(da.entities, 9);
    }

    pub async fn sync_results_and_peer_states(b: Backend) {
        let a = b.node("a").await;
        let (p, q) = (device("peer-p"), device("peer-q"));
        let fresh = a.store.peer_state(&p).await.expect("peer");
        assert_eq!(
            (fresh.device_id.clone(), fresh.cursor, fresh.peer_head, fresh.last_sync, fresh.last_error),
            (p.clone(), 0, 0, None, None)
        );
        assert!(a.store.peer_states().await.expect("peers").is_empty());

        a.store.record_sync_result(&q, ts(5), Some("refused".into())).await.expect("record");
        let st = a.store.peer_state(&q).await.expect("peer");
        assert_eq!((st.cursor, st.last_sync, st.last_error.as_deref()), (0, None, Some("refused")));
        a.store.apply_remote(&q, Vec::new(), 7, 9, None, None).await.expect("empty batch moves the cursor");
        a.store.record_sync_result(&q, ts(10), None).await.expect("record");
        let st = a.store.peer_state(&q).await.expect("peer");
        assert_eq!((st.cursor, st.peer_head, st.last_sync, st.last_error), (7, 9, Some(ts(10)), None));
        a.store.record_sync_result(&q, ts(20), Some("timeout".into())).await.expect("record");
        let st = a.store.peer_state(&q).await.expect("peer");
        assert_eq!(
            (st.cursor, st.last_sync, st.last_error.as_deref()),
            (7, Some(ts(10)), Some("timeout")),
            "a failure keeps the cursor and the last success"
        );
        a.store.record_sync_result(&p, ts(30), None).await.expect("record");
        let all = a.store.peer_states().await.expect("peers");
        assert_eq!(all.iter().map(|s| s.device_id.clone()).collect::<Vec<_>>(), vec![p, q]);
    }

    pub async fn device_identity(b: Backend) {
        // `node` stored "first" as the local identity on a fresh store.
        let n = b.node("first").await;
        let again = n.store.local_device_id(device("second")).await.expect("id");
        assert_eq!(again, device("first"), "the stored id wins");
        assert_eq!(again, n.id);
    }

    fn record(id: &str, source: DeviceSource, address: &str, seen: i64) -> DeviceRecord {
        DeviceRecord {
            device_id: device(id),
            name: format!("{id} till"),
            address: address.to_string(),
            port: 8080,
            last_seen: ts(seen),
            source,
            trusted: false,
        }
    }

    pub async fn device_registry_rules(b: Backend) {
        let a = b.node("a").await;
        let s = &a.store;
        assert_eq!(s.device(&device("zz")).await.expect("read"), None);
        s.upsert_device(record("m", DeviceSource::Manual, "10.0.0.1", 10)).await.expect("upsert");
        s.upsert_device(record("a", DeviceSource::Local, "127.0.0.1", 10)).await.expect("upsert");
        s.upsert_device(record("d", DeviceSource::Mdns, "10.0.0.3", 10)).await.expect("upsert");

        // Rediscovery by mDNS keeps the stronger source but updates the rest.
        let mut seen = record("m", DeviceSource::Mdns, "10.0.0.9", 20);
        seen.trusted = true;
        seen.port = 9090;
        s.upsert_device(seen).await.expect("upsert");
        let m = s.device(&device("m")).await.expect("read").expect("m");
        assert_eq!(m.source, DeviceSource::Manual);
        assert_eq!((m.address.as_str(), m.port, m.last_seen, m.trusted), ("10.0.0.9", 9090, ts(20), true));
        s.upsert_device(record("a", DeviceSource::Mdns, "10.0.0.2", 20)).await.expect("upsert");
        assert_eq!(s.device(&device("a")).await.expect("read").expect("a").source, DeviceSource::Local);
        // Upgrading mdns -> manual is allowed.
        s.upsert_device(record("d", DeviceSource::Manual, "10.0.0.3", 20)).await.expect("upsert");
        assert_eq!(s.device(&device("d")).await.expect("read").expect("d").source, DeviceSource::Manual);
        // Learned from a peer: stays "peer" until mDNS finds it, and never weakens mDNS.
        s.upsert_device(record("p", DeviceSource::Peer, "10.0.0.5", 20)).await.expect("upsert");
        assert_eq!(s.device(&device("p")).await.expect("read").expect("p").source, DeviceSource::Peer);
        s.upsert_device(record("p", DeviceSource::Mdns, "10.0.0.5", 21)).await.expect("upsert");
        s.upsert_device(record("p", DeviceSource::Peer, "10.0.0.5", 22)).await.expect("upsert");
        assert_eq!(s.device(&device("p")).await.expect("read").expect("p").source, DeviceSource::Mdns);

        // touch never moves last_seen backwards.
        s.touch_device(&device("d"), ts(50)).await.expect("touch");
        s.touch_device(&device("d"), ts(40)).await.expect("touch");
        assert_eq!(s.device(&device("d")).await.expect("read").expect("d").last_seen, ts(50));
        let err = s.touch_device(&device("ghost"), ts(1)).await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound(_)));

        let ids: Vec<String> =
            s.devices().await.expect("devices").into_iter().map(|d| d.device_id.to_string()).collect();
        assert_eq!(ids, vec!["a", "d", "m", "p"]);
    }

    fn new_op(id: &str, created: i64) -> NewOperation {
        NewOperation {
            id: id.to_string(),
            kind: "http_post".into(),
            target: "https://head-office.example/sales".into(),
            payload: json!({"sale": id, "lines": [1, 2]}),
            max_retries: 3,
            created_at: ts(created),
        }
    }

    pub async fn queue_lifecycle(b: Backend) {
        let a = b.node("a").await;
        let s = &a.store;
        let op = s.enqueue(new_op("op1", 100)).await.expect("enqueue");
        assert_eq!(
            (op.status, op.attempts, op.next_attempt_at, op.last_error.clone()),
            (OperationStatus::Pending, 0, ts(100), None)
        );
        assert_eq!(s.operation("op1").await.expect("read"), Some(op.clone()));
        let err = s.enqueue(new_op("op1", 200)).await.expect_err("duplicate id");
        assert!(matches!(err, StoreError::InvalidState(_)));

        assert!(s.due(ts(99), 10).await.expect("due").is_empty());
        assert_eq!(s.due(ts(100), 10).await.expect("due"), vec![op.clone()]);

        // Claim: compare-and-set.
        assert!(s.mark_processing("op1").await.expect("claim"));
        assert!(!s.mark_processing("op1").await.expect("claim again"));
        assert!(!s.mark_processing("ghost").await.expect("claim unknown"));
        assert!(s.due(ts(1_000), 10).await.expect("due").is_empty(), "processing is not due");

        // A failed attempt with a retry goes back to pending, due later.
        let failed = s.mark_failed("op1", "503", Some(ts(500))).await.expect("fail");
        assert_eq!(
            (failed.status, failed.attempts, failed.next_attempt_at, failed.last_error.as_deref()),
            (OperationStatus::Pending, 1, ts(500), Some("503"))
        );
        assert!(s.due(ts(499), 10).await.expect("due").is_empty());
        assert_eq!(s.due(ts(500), 10).await.expect("due").len(), 1);

        // A final failure.
        assert!(s.mark_processing("op1").await.expect("claim"));
        let dead = s.mark_failed("op1", "400 rejected", None).await.expect("fail");
        assert_eq!(
            (dead.status, dead.attempts, dead.last_error.as_deref()),
            (OperationStatus::Failed, 2, Some("400 rejected"))
        );
        assert!(!s.mark_processing("op1").await.expect("failed is not claimable"));
        let err = s.mark_completed("op1", ts(600)).await.expect_err("failed cannot complete");
        assert!(matches!(err, StoreError::InvalidState(_)));

        // Operator retry: attempts reset, due now.
        let retried = s.retry("op1", ts(700)).await.expect("retry");
        assert_eq!((retried.status, retried.attempts, retried.next_attempt_at), (OperationStatus::Pending, 0, ts(700)));
        let err = s.retry("op1", ts(701)).await.expect_err("only failed can be retried");
        assert!(matches!(err, StoreError::InvalidState(_)));

        // Delivered.
        assert!(s.mark_processing("op1").await.expect("claim"));
        s.mark_completed("op1", ts(800)).await.expect("complete");
        let done = s.operation("op1").await.expect("read").expect("op1");
        assert_eq!((done.status, done.attempts), (OperationStatus::Completed, 1));
        let err = s.cancel("op1").await.expect_err("completed cannot be cancelled");
        assert!(matches!(err, StoreError::InvalidState(_)));
        let err = s.mark_failed("op1", "late", None).await.expect_err("completed cannot fail");
        assert!(matches!(err, StoreError::InvalidState(_)));

        // Cancel from pending and from failed.
        s.enqueue(new_op("op2", 110)).await.expect("enqueue");
        let c = s.cancel("op2").await.expect("cancel pending");
        assert_eq!(c.status, OperationStatus::Cancelled);
        s.enqueue(new_op("op3", 120)).await.expect("enqueue");
        assert!(s.mark_processing("op3").await.expect("claim"));
        let err = s.cancel("op3").await.expect_err("processing cannot be cancelled");
        assert!(matches!(err, StoreError::InvalidState(_)));
        s.mark_failed("op3", "boom", None).await.expect("fail");
        assert_eq!(s.cancel("op3").await.expect("cancel failed").status, OperationStatus::Cancelled);
        assert!(!s.mark_processing("op3").await.expect("cancelled is not claimable"));

        // Unknown ids.
        for err in [
            s.mark_completed("ghost", ts(1)).await.expect_err("unknown"),
            s.mark_failed("ghost", "x", None).await.map(|_| ()).expect_err("unknown"),
            s.retry("ghost", ts(1)).await.map(|_| ()).expect_err("unknown"),
            s.cancel("ghost").await.map(|_| ()).expect_err("unknown"),
        ] {
            assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
        }
        assert_eq!(s.operation("ghost").await.expect("read"), None);

        // Crash recovery: processing goes back to pending.
        s.enqueue(new_op("op4", 130)).await.expect("enqueue");
        s.enqueue(new_op("op5", 140)).await.expect("enqueue");
        assert!(s.mark_processing("op4").await.expect("claim"));
        assert!(s.mark_processing("op5").await.expect("claim"));
        assert_eq!(s.recover_processing().await.expect("recover"), 2);
        assert_eq!(s.recover_processing().await.expect("recover"), 0);
        assert_eq!(s.operation("op4").await.expect("read").expect("op4").status, OperationStatus::Pending);
    }

    pub async fn outbox_is_queued_with_the_batch_or_not_at_all(b: Backend) {
        let a = b.node("a").await;
        let sale = key("sale", "s1");
        // The outbox sees the batch's outcome, final states included.
        let outbox: tillmesh_domain::ports::Outbox = Box::new(|out| {
            out.entities
                .iter()
                .map(|(k, s, _)| {
                    let mut op = new_op(&format!("fwd-{}", k.entity_id()), 5);
                    op.payload = json!({"total": s.view().fields["total"]});
                    op
                })
                .collect()
        });
        let ops = vec![(sale.clone(), put(&[("total", json!(1250))]))];
        a.store.apply_local_with_outbox(&a.id, ops, ts(5), outbox).await.expect("write + queue");
        let queued = a.store.operations(None, 10).await.expect("list");
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].id.as_str(), &queued[0].payload), ("fwd-s1", &json!({"total": 1250})));
        let before = digest(&a).await;

        // A rejected batch queues nothing.
        let bad = vec![(key("sale", "s2"), put(&[("total", json!(1))])), (key("sale", "s2"), counter("total", 1))];
        let err = a
            .store
            .apply_local_with_outbox(&a.id, bad, ts(6), Box::new(|_| vec![new_op("never", 6)]))
            .await
            .expect_err("kind mismatch");
        assert!(matches!(err, StoreError::Rejected(_)), "got {err:?}");
        // An operation that cannot be queued (its id is taken) undoes the batch's writes.
        let ops = vec![(key("sale", "s3"), put(&[("total", json!(7))]))];
        let err = a
            .store
            .apply_local_with_outbox(&a.id, ops, ts(7), Box::new(|_| vec![new_op("fwd-s1", 7)]))
            .await
            .expect_err("duplicate operation id");
        assert!(matches!(err, StoreError::InvalidState(_)), "got {err:?}");
        assert_eq!(a.store.entity(&key("sale", "s3")).await.expect("read"), None);
        assert_eq!(digest(&a).await, before);
        assert_eq!(a.store.operations(None, 10).await.expect("list").len(), 1);
    }

    pub async fn queue_cas_under_contention(b: Backend) {
        let a = b.node("a").await;
        for i in 0..20 {
            a.store.enqueue(new_op(&format!("op{i}"), i)).await.expect("enqueue");
        }
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = a.store.clone();
            tasks.push(tokio::spawn(async move {
                let mut won = Vec::new();
                for i in 0..20 {
                    let id = format!("op{i}");
                    if s.mark_processing(&id).await.expect("claim") {
                        won.push(id);
                    }
                }
                won
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all.sort();
        let mut expected: Vec<String> = (0..20).map(|i| format!("op{i}")).collect();
        expected.sort();
        assert_eq!(all, expected, "every operation claimed exactly once");
        assert_eq!(a.store.stats().await.expect("stats").processing, 20);
    }

    pub async fn queue_listing_and_stats(b: Backend) {
        let a = b.node("a").await;
        let s = &a.store;
        for (i, created) in [(1, 300), (2, 100), (3, 200), (4, 200)] {
            s.enqueue(new_op(&format!("op{i}"), created)).await.expect("enqueue");
        }
        let ids = |v: Vec<tillmesh_domain::queue::QueuedOperation>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
        // Newest first; equal times by insertion, latest first.
        assert_eq!(ids(s.operations(None, 10).await.expect("ops")), vec!["op1", "op4", "op3", "op2"]);
        assert_eq!(ids(s.operations(None, 2).await.expect("ops")), vec!["op1", "op4"]);
        // Due by next attempt time.
        assert_eq!(ids(s.due(ts(1_000), 10).await.expect("due")), vec!["op2", "op3", "op4", "op1"]);
        assert_eq!(ids(s.due(ts(1_000), 1).await.expect("due")), vec!["op2"]);

        assert!(s.mark_processing("op1").await.expect("claim"));
        assert!(s.mark_processing("op2").await.expect("claim"));
        s.mark_completed("op2", ts(400)).await.expect("complete");
        assert!(s.mark_processing("op3").await.expect("claim"));
        s.mark_failed("op3", "x", None).await.expect("fail");
        s.cancel("op4").await.expect("cancel");
        s.enqueue(new_op("op5", 50)).await.expect("enqueue");

        let st = s.stats().await.expect("stats");
        assert_eq!((st.pending, st.processing, st.completed, st.failed), (1, 1, 1, 1));
        assert_eq!(ids(s.operations(Some(OperationStatus::Failed), 10).await.expect("ops")), vec!["op3"]);
        assert_eq!(ids(s.operations(Some(OperationStatus::Cancelled), 10).await.expect("ops")), vec!["op4"]);
        assert_eq!(ids(s.operations(Some(OperationStatus::Pending), 10).await.expect("ops")), vec!["op5"]);
        let op3 = s.operation("op3").await.expect("read").expect("op3");
        assert_eq!(op3.payload, json!({"sale": "op3", "lines": [1, 2]}));
        assert_eq!(op3.max_retries, 3);
    }

    fn note(id: &str, at: i64) -> Notification {
        Notification {
            id: id.to_string(),
            kind: "operation_failed".into(),
            message: format!("{id} failed"),
            operation_id: Some(format!("op-{id}")),
            created_at: ts(at),
            acknowledged: false,
        }
    }

    pub async fn notifications_lifecycle(b: Backend) {
        let a = b.node("a").await;
        let s = &a.store;
        assert!(s.notifications(10).await.expect("list").is_empty());
        s.add_notification(note("n1", 10)).await.expect("add");
        s.add_notification(note("n2", 30)).await.expect("add");
        let mut n3 = note("n3", 20);
        n3.operation_id = None;
        s.add_notification(n3.clone()).await.expect("add");
        // Adding an existing id again keeps the first.
        let mut dup = note("n1", 99);
        dup.message = "other".into();
        s.add_notification(dup).await.expect("add duplicate");

        let list = s.notifications(10).await.expect("list");
        let ids: Vec<&str> = list.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, vec!["n2", "n3", "n1"]);
        assert_eq!(list[1], n3);
        assert_eq!(list[2], note("n1", 10));
        assert_eq!(s.notifications(1).await.expect("list").len(), 1);

        let acked = s.acknowledge("n1").await.expect("ack");
        assert!(acked.acknowledged);
        assert_eq!(acked.message, "n1 failed");
        let list = s.notifications(10).await.expect("list");
        assert!(list.iter().find(|n| n.id == "n1").expect("n1").acknowledged);
        assert!(!list.iter().find(|n| n.id == "n2").expect("n2").acknowledged);
        // Acknowledging twice is fine; unknown is NotFound.
        assert!(s.acknowledge("n1").await.expect("ack again").acknowledged);
        let err = s.acknowledge("ghost").await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound(_)));
    }
}
