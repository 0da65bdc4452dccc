//! The compacted log: a record that a later record of its entity includes is neither
//! kept nor served, a newcomer pulls about one record per live entity, and replicas
//! still converge — through relays, small pages, partial pulls and out-of-order
//! service — with pullers announcing only their coverage.

mod common;

use std::collections::BTreeMap;

use common::{all_of, counter, digest, key, pull, pull_pages, put, Backend, Node};
use proptest::prelude::*;
use serde_json::json;
use tillmesh_domain::ports::{DeviceStore, EntityStore, SyncStore};
use tillmesh_domain::{EntityKey, EntityOp, VectorClock};

/// Every record of `node`'s log, by entity.
async fn records_by_entity(node: &Node) -> BTreeMap<EntityKey, usize> {
    let mut out = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = node.store.changes_after(after, 1_000, usize::MAX, &VectorClock::new()).await.expect("page");
        for c in &page.changes {
            *out.entry(c.key.clone()).or_insert(0) += 1;
        }
        after = page.next;
        if !page.has_more {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stock_adjustments_leave_one_record_and_a_newcomer_pulls_one() {
    let a = Backend::File.node("a").await;
    let p = key("product", "p1");
    common::write(&a, vec![(p.clone(), put(&[("name", json!("Tea"))]))], 1).await;
    for i in 0..1_000 {
        common::write(&a, vec![(p.clone(), counter("stock", if i % 2 == 0 { -1 } else { 3 }))], 2 + i).await;
    }
    // Several ops on one entity in one batch make one record too.
    common::write(&a, vec![(p.clone(), counter("stock", 1)), (p.clone(), counter("stock", 1))], 5_000).await;
    assert_eq!(records_by_entity(&a).await, BTreeMap::from([(p.clone(), 1)]));
    assert_eq!(a.store.known_origins().await.expect("known").get(&a.id), 1_003, "every op had its own sequence");

    let newcomer = Backend::File.node("n").await;
    let out = pull(&a, &newcomer).await;
    assert_eq!((out.applied, out.duplicates), (1, 0));
    assert_eq!(digest(&newcomer).await, digest(&a).await);
    assert_eq!(common::visible(&newcomer, &p, "stock").await, Some(json!(1_002)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_are_kept_until_a_later_one_includes_them() {
    let (a, b, c, d) = (
        Backend::Memory.node("a").await,
        Backend::Memory.node("b").await,
        Backend::Memory.node("c").await,
        Backend::Memory.node("d").await,
    );
    let p = key("product", "p1");
    common::write(&a, vec![(p.clone(), put(&[("name", json!("Tea"))]))], 1).await;
    pull(&a, &b).await;
    // Both sell offline: their records are concurrent.
    common::write(&a, vec![(p.clone(), counter("stock", -1))], 2).await;
    common::write(&b, vec![(p.clone(), counter("stock", -2))], 3).await;
    pull(&a, &c).await;
    pull(&b, &c).await;
    assert_eq!(records_by_entity(&c).await.get(&p), Some(&2), "neither includes the other");
    // A relay serves both, so a puller of c alone gets the merged state.
    pull(&c, &d).await;
    assert_eq!(digest(&d).await, digest(&c).await);
    assert_eq!(common::visible(&d, &p, "stock").await, Some(json!(-3)));
    // a learns b's sale and sells again: its record includes both.
    pull(&b, &a).await;
    common::write(&a, vec![(p.clone(), counter("stock", -1))], 4).await;
    pull(&a, &c).await;
    assert_eq!(records_by_entity(&c).await.get(&p), Some(&1));
    pull(&c, &d).await;
    assert_eq!(records_by_entity(&d).await.get(&p), Some(&1));
    assert_eq!(common::visible(&d, &p, "stock").await, Some(json!(-4)));
    assert_eq!(digest(&d).await, digest(&a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_held_already_is_not_logged_again() {
    let (a, b) = (Backend::Memory.node("a").await, Backend::Memory.node("b").await);
    common::write(&a, vec![(key("t", "x"), put(&[("n", json!(1))]))], 1).await;
    pull(&a, &b).await;
    // a pulls its own record back from b: nothing new.
    let echo = pull(&b, &a).await;
    assert_eq!(echo.applied, 0);
    let head = a.store.log_head().await.expect("head");
    // An old record delivered again by a peer that does not skip it.
    let page = b.store.changes_after(0, 10, usize::MAX, &VectorClock::new()).await.expect("page");
    common::write(&b, vec![(key("t", "x"), put(&[("n", json!(2))]))], 2).await;
    pull(&b, &a).await;
    let stale = a.store.apply_remote(&b.id, page.changes, 0, 0, None, None).await.expect("stale");
    assert_eq!((stale.applied, stale.duplicates), (0, 1));
    assert_eq!(records_by_entity(&a).await.get(&key("t", "x")), Some(&1));
    assert!(a.store.log_head().await.expect("head") > head);
    assert_eq!(common::visible(&a, &key("t", "x"), "n").await, Some(json!(2)));
}

#[derive(Clone, Debug)]
enum Step {
    /// Node writes an op on entity `e`.
    Write(usize, u8, u8),
    /// `to` pulls from `from` in pages of `limit`, at most `pages` of them.
    Pull { from: usize, to: usize, limit: usize, pages: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..3, 0u8..4, 0u8..4).prop_map(|(n, e, op)| Step::Write(n, e, op)),
        (0usize..3, 0usize..3, 1usize..4, 1usize..4)
            .prop_filter("two nodes", |(f, t, _, _)| f != t)
            .prop_map(|(from, to, limit, pages)| Step::Pull { from, to, limit, pages }),
    ]
}

fn op(kind: u8, n: usize) -> EntityOp {
    match kind {
        0 => put(&[("name", json!(format!("v{n}")))]),
        1 => counter("stock", 1 + n as i64),
        2 => put(&[("price", json!(n))]),
        _ => EntityOp::Delete,
    }
}

/// Pulls `pages` pages of `limit` changes at most, as the app does (resuming at the
/// cursor, announcing coverage, taking the peer's coverage only at its head).
async fn pull_some(from: &Node, to: &Node, limit: usize, pages: usize) {
    common::pull_at_most(from, to, limit, usize::MAX, pages).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the writes, partial pulls and relays, once every node has pulled
    /// every other to its head the replicas are identical, hold what a replica that
    /// saw every record would hold, and keep at most one record per entity and writer.
    #[test]
    fn compacted_logs_converge_through_partial_pulls_and_relays(steps in proptest::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async {
            let nodes = [Backend::Memory.node("n0").await, Backend::Memory.node("n1").await, Backend::Memory.node("n2").await];
            for (i, s) in steps.iter().enumerate() {
                match s {
                    Step::Write(n, e, kind) => {
                        let k = key("product", &format!("p{e}"));
                        common::write(&nodes[*n], vec![(k, op(*kind, i))], i as i64).await;
                    }
                    Step::Pull { from, to, limit, pages } => pull_some(&nodes[*from], &nodes[*to], *limit, *pages).await,
                }
            }
            // Everyone pulls everyone to the head, twice round (relays included).
            for _ in 0..2 {
                for to in 0..3 {
                    for from in 0..3 {
                        if from != to {
                            pull_pages(&nodes[from], &nodes[to], 2, usize::MAX).await;
                        }
                    }
                }
            }
            // A reference that takes every node's whole log, skipping nothing.
            let reference = Backend::Memory.node("r").await;
            for n in &nodes {
                let page = n.store.changes_after(0, 100_000, usize::MAX, &VectorClock::new()).await.expect("page");
                reference.store.apply_remote(&n.id, page.changes, page.next, page.head, None, None).await.expect("apply");
            }
            let d0 = digest(&reference).await;
            for n in &nodes {
                assert_eq!(digest(n).await, d0);
                assert_eq!(all_of(n, "product").await, all_of(&reference, "product").await);
            }
            for n in &nodes {
                for (k, count) in records_by_entity(n).await {
                    assert!(count <= 3, "{k}: {count} records for three writers");
                }
            }
        });
    }
}

/// Why pullers announce coverage and not the highest sequence they hold: a compacted
/// log serves a writer's changes out of order, so holding one of them says nothing of
/// the writer's earlier ones. Here `p` holds w's change 2 but not w's change 1, which
/// only `t` still has once w is gone; skipping it by "highest held" would lose it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_held_out_of_order_does_not_hide_earlier_ones() {
    let (w, t, p) = (Backend::Memory.node("w").await, Backend::Memory.node("t").await, Backend::Memory.node("p").await);
    let (x, y) = (key("product", "x"), key("product", "y"));
    common::write(&w, vec![(y.clone(), put(&[("v", json!(1))]))], 1).await; // w#1
    pull(&w, &t).await;
    common::write(&w, vec![(x.clone(), put(&[("v", json!(2))]))], 2).await; // w#2
    common::write(&w, vec![(y.clone(), put(&[("v", json!(3))]))], 3).await; // w#3: y's w#1 goes from w's log
                                                                            // p reads one page of w's log (x's record, w#2) and w is never heard from again.
    pull_some(&w, &p, 1, 1).await;
    assert!(p.store.entity(&x).await.expect("read").is_some());
    assert_eq!(p.store.known_origins().await.expect("held").get(&w.id), 2, "p holds w#2");
    assert_eq!(p.store.covered().await.expect("covered").get(&w.id), 0, "but covers nothing of w");
    pull(&t, &p).await;
    assert_eq!(common::visible(&p, &y, "v").await, Some(json!(1)), "t's copy of y reaches p");
}

/// A terminal covers its current writer by what it holds, and no one else's: not even a
/// writer whose id a LIKE pattern of its device id would match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_covers_its_own_writers_only() {
    let me = Backend::Memory.node("t_1").await;
    let other = Backend::Memory.node("tx1").await;
    let (mine, theirs) = (common::device("t_1.0001"), common::device("tx1.0001"));
    me.store.take_writer(mine.clone(), "m".into(), None).await.expect("writer");
    me.store.apply_local(&mine, vec![(key("a", "1"), put(&[("n", json!(1))]))], common::ts(1)).await.expect("write");
    other
        .store
        .apply_local(&theirs, vec![(key("b", "1"), put(&[("n", json!(1))]))], common::ts(1))
        .await
        .expect("write");
    let page = other.store.changes_after(0, 10, usize::MAX, &VectorClock::new()).await.expect("page");
    me.store.apply_remote(&other.id, page.changes, page.next, page.head, None, None).await.expect("apply");
    let covered = me.store.covered().await.expect("covered");
    assert_eq!((covered.get(&mine), covered.get(&theirs)), (1, 0), "{covered:?}");
}

/// A terminal restored from a backup gets its old writer's changes back from peers
/// out of order; it must not cover that writer by the highest one held (found in review:
/// it then skipped w#1 for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_terminal_does_not_cover_its_old_writer_by_what_came_back() {
    let orig = Backend::Memory.node("w").await;
    let (r, p) = (Backend::Memory.node("r").await, Backend::Memory.node("p").await);
    let w1 = common::device("w.1");
    orig.store.take_writer(w1.clone(), "m".into(), None).await.expect("writer");
    let (x, y) = (key("product", "x"), key("product", "y"));
    orig.store.apply_local(&w1, vec![(y.clone(), put(&[("v", json!(1))]))], common::ts(1)).await.expect("w#1");
    pull(&orig, &r).await;
    orig.store.apply_local(&w1, vec![(x.clone(), put(&[("v", json!(2))]))], common::ts(2)).await.expect("w#2");
    orig.store.apply_local(&w1, vec![(y.clone(), put(&[("v", json!(3))]))], common::ts(3)).await.expect("w#3");
    pull_some(&orig, &p, 1, 1).await; // p: x (w#2) only
    pull(&r, &p).await; // and y as w#1, from r
                        // w's disk dies; it is restored from a backup taken before its first write, and
                        // takes a new writer (its marker changed).
    let restored = Backend::Memory.node("w").await;
    restored.store.take_writer(w1.clone(), "m".into(), None).await.expect("old writer, as in the backup");
    restored.store.take_writer(common::device("w.2"), "m2".into(), None).await.expect("new writer");
    // One record a page: w#2 arrives before w#1. Had the restored terminal covered its
    // old writer up to the highest held (2), p would have skipped w#1.
    pull_some(&p, &restored, 1, 100).await;
    assert_eq!(common::visible(&restored, &y, "v").await, Some(json!(1)), "y (w#1) arrived after w#2");
    pull(&r, &restored).await;
    assert_eq!(digest(&restored).await, digest(&p).await);
}

/// A peer's log replaced by a restored copy: positions below the copy's epoch start may
/// hold records the original moved past our cursor, so the app reads the copy again
/// from 0 (`rewind_to`), and then nothing is missing (found in review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_replaced_by_a_restored_copy_is_read_again_from_the_start() {
    let orig = Backend::Memory.node("t").await;
    let copy = Backend::Memory.node("t").await; // the backup: the same history up to position 3
    let (p, q) = (Backend::Memory.node("p").await, Backend::Memory.node("q").await);
    let w1 = common::device("t.1");
    let (x, y, z) = (key("product", "x"), key("product", "y"), key("product", "z"));
    for (i, k) in [&x, &y, &z].into_iter().enumerate() {
        for n in [&orig, &copy] {
            n.store
                .apply_local(&w1, vec![(k.clone(), put(&[("v", json!(i))]))], common::ts(i as i64))
                .await
                .expect("write");
        }
    }
    pull(&orig, &q).await;
    // After the backup the original writes x again: position 1 goes, x moves to 4.
    orig.store.apply_local(&w1, vec![(x.clone(), put(&[("v", json!(9))]))], common::ts(9)).await.expect("write");
    pull_some(&orig, &p, 1, 2).await; // p reads y and z (cursor 3), then the original dies
    assert_eq!(p.store.peer_state(&orig.id).await.expect("peer").cursor, 3);
    // The copy answers under another epoch: the app rewinds p's cursor to 0.
    p.store.apply_remote(&copy.id, Vec::new(), 0, 3, None, Some("t.2".into())).await.expect("rewind");
    assert_eq!(p.store.peer_state(&copy.id).await.expect("peer").epoch.as_deref(), Some("t.2"));
    pull(&copy, &p).await;
    pull(&q, &p).await;
    assert_eq!(common::visible(&p, &x, "v").await, Some(json!(0)), "x as the copy and q hold it");
    assert_eq!(digest(&p).await, digest(&copy).await);
}
