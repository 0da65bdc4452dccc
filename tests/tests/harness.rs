//! Many terminals in one process under partitions, message loss, duplication,
//! reordering and crashes: they converge, lose no write, and apply nothing twice.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use anyhow::Result;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tillmesh_domain::{EntityKey, EntityOp};
use tillmesh_tests::cluster::Cluster;

async fn put(c: &Cluster, i: usize, ty: &str, id: &str, field: &str, value: serde_json::Value) -> Result<()> {
    let op = EntityOp::Put { fields: BTreeMap::from([(field.to_string(), Some(value))]) };
    c.state(i).entities.apply(vec![(EntityKey::new(ty, id)?, op)]).await?;
    Ok(())
}

async fn adjust(c: &Cluster, i: usize, id: &str, delta: i64) -> Result<()> {
    let op = EntityOp::Counter { field: "stock".into(), delta };
    c.state(i).entities.apply(vec![(EntityKey::new("product", id)?, op)]).await?;
    Ok(())
}

async fn field(c: &Cluster, i: usize, ty: &str, id: &str, f: &str) -> Result<serde_json::Value> {
    let s = c.state(i).store.entity(&EntityKey::new(ty, id)?).await?;
    Ok(s.map(|s| s.view().fields.get(f).cloned().unwrap_or_default()).unwrap_or_default())
}

/// Every terminal's log is compacted and whole: no change twice, every entity's
/// records there, and at most one record per entity and writer — never more than
/// the `changes` written.
async fn assert_logs_hold(c: &Cluster, changes: u64) -> Result<()> {
    use std::collections::BTreeSet;
    use tillmesh_domain::VectorClock;
    for i in 0..c.len() {
        let store = &c.state(i).store;
        let (mut ids, mut per_entity): (BTreeSet<(String, u64)>, BTreeMap<EntityKey, usize>) = Default::default();
        let mut after = 0;
        loop {
            let page = store.changes_after(after, 1_000, usize::MAX, &VectorClock::new()).await?;
            for ch in &page.changes {
                assert!(
                    ids.insert((ch.origin.to_string(), ch.seq)),
                    "terminal {i} logs {}#{} twice (seed {})",
                    ch.origin,
                    ch.seq,
                    c.seed
                );
                *per_entity.entry(ch.key.clone()).or_default() += 1;
            }
            after = page.next;
            if !page.has_more {
                break;
            }
        }
        let entities = store.digest().await?.entities;
        assert_eq!(per_entity.len() as u64, entities, "terminal {i}: every entity has its records (seed {})", c.seed);
        assert!(
            ids.len() as u64 <= changes,
            "terminal {i}: {} records for {changes} changes (seed {})",
            ids.len(),
            c.seed
        );
        for (k, n) in per_entity {
            assert!(n <= c.len(), "terminal {i}: {n} records of {k} (seed {})", c.seed);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_line_of_three_reach_everywhere() -> Result<()> {
    let c = Cluster::spawn(3).await?;
    // A–B–C: A and C never talk.
    for (a, b) in [(0, 1), (1, 0), (1, 2), (2, 1)] {
        c.link(a, b).await?;
    }
    put(&c, 0, "product", "a", "name", json!("from A")).await?;
    put(&c, 2, "product", "c", "name", json!("from C")).await?;
    put(&c, 1, "setting", "b", "tax", json!(7)).await?;
    let rounds = c.converge(5).await?;
    assert!(rounds <= 3, "a line of three needs at most 3 rounds, took {rounds}");
    assert_eq!(field(&c, 2, "product", "a", "name").await?, json!("from A"));
    assert_eq!(field(&c, 0, "product", "c", "name").await?, json!("from C"));
    assert_logs_hold(&c, 3).await?;
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_sold_on_five_offline_terminals_adds_up_after_healing() -> Result<()> {
    let c = Cluster::spawn(5).await?;
    c.link_all().await?;
    adjust(&c, 0, "p1", 100).await?;
    c.converge(5).await?;
    c.partition(&[0, 1, 2, 3, 4]);
    let mut sold = 0;
    for i in 0..5 {
        for _ in 0..=i {
            adjust(&c, i, "p1", -2).await?;
            sold += 2;
        }
    }
    assert_eq!(c.round().await?, 0, "nothing crosses a partition");
    c.heal();
    c.converge(5).await?;
    for i in 0..5 {
        assert_eq!(field(&c, i, "product", "p1", "stock").await?, json!(100 - sold));
    }
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workloads_under_partitions_and_faults_converge_without_loss() -> Result<()> {
    let n = 10;
    let mut c = Cluster::spawn(n).await?;
    let mut rng = SmallRng::seed_from_u64(c.seed);
    c.link_all().await?;
    c.set_faults(0.2, 0.2, 0.5);
    let mut written = 0u64;
    let mut stock_delta = 0i64;
    let mut last_write: BTreeMap<(usize, String), i64> = BTreeMap::new();
    for epoch in 0..4 {
        let groups: Vec<usize> = (0..n).map(|_| rng.gen_range(0..3)).collect();
        c.partition(&groups);
        for _ in 0..60 {
            let i = rng.gen_range(0..n);
            let id = format!("p{}", rng.gen_range(0..8));
            if rng.gen_bool(0.3) {
                let d = rng.gen_range(-5..5);
                adjust(&c, i, "stock-item", d).await?;
                stock_delta += d;
            } else {
                let v = rng.gen_range(0..1000);
                put(&c, i, "product", &id, &format!("f{}", rng.gen_range(0..3)), json!(v)).await?;
                last_write.insert((i, id), v);
            }
            written += 1;
        }
        c.round().await?;
        if epoch == 2 {
            // A terminal crashes and comes back mid-run.
            c.restart(3).await?;
        }
    }
    c.heal();
    c.set_faults(0.0, 0.0, 0.0);
    let rounds = c.converge(10).await?;
    println!("converged in {rounds} rounds after healing (seed {})", c.seed);
    assert_logs_hold(&c, written).await?;
    assert_eq!(field(&c, 0, "product", "stock-item", "stock").await?, json!(stock_delta));
    // Every terminal lists the same open conflicts.
    let first: Vec<_> = c.state(0).store.open_conflicts().await?.into_iter().map(|x| x.id).collect();
    for i in 1..n {
        let other: Vec<_> = c.state(i).store.open_conflicts().await?.into_iter().map(|x| x.id).collect();
        assert_eq!(first, other, "conflicts of terminal {i}");
    }
    // No write lost: each entity a terminal wrote exists everywhere.
    for (_, id) in last_write.keys() {
        for i in 0..n {
            assert!(c.state(i).store.entity(&EntityKey::new("product", id.clone())?).await?.is_some());
        }
    }
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_a_batch_loses_nothing_and_repeats_nothing() -> Result<()> {
    let mut c = Cluster::spawn(2).await?;
    c.link_all().await?;
    let ops: Vec<_> = (0..2000)
        .map(|i| {
            let op = EntityOp::Put { fields: BTreeMap::from([("n".to_string(), Some(json!(i)))]) };
            (EntityKey::new("sale", format!("s{i:05}")).unwrap(), op)
        })
        .collect();
    c.state(0).entities.apply(ops).await?;
    // Start pulling, then crash terminal 1 while batches are being applied.
    let sync = c.state(1).sync.clone();
    let task = tokio::spawn(async move { sync.sync_round().await });
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    task.abort();
    let _ = task.await;
    c.restart(1).await?;
    let partial = c.state(1).store.log_head().await?;
    c.converge(5).await?;
    println!("crashed with {partial} of 2000 changes applied");
    assert_logs_hold(&c, 2000).await?;
    c.shutdown().await;
    Ok(())
}
