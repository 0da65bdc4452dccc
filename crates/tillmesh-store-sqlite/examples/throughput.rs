//! Throughput of the SQLite store, in release: local writes (one batch of 10,000 ops,
//! then 100,000 single-op puts in batches of 100), remote application of those into a
//! second store in batches of 100, log paging, and the digest.
//!
//! `cargo run -p tillmesh-store-sqlite --release --example throughput [N]`

use std::error::Error;
use std::time::Instant;

use serde_json::json;
use tillmesh_domain::ports::{DeviceStore, EntityStore, SyncStore};
use tillmesh_domain::{DeviceId, EntityKey, EntityOp, Timestamp, VectorClock};
use tillmesh_store_sqlite::SqliteStore;

/// A POS-sized product document (~250 bytes of JSON).
fn product(i: usize) -> EntityOp {
    let fields = [
        ("name", json!(format!("Product number {i} (500 g)"))),
        ("sku", json!(format!("SKU-{i:08}"))),
        ("price_cents", json!(199 + (i % 1000))),
        ("category", json!(["bakery", "dairy", "drinks", "frozen"][i % 4])),
        ("vat_rate", json!(0.2)),
        ("barcode", json!(format!("5{i:012}"))),
        ("active", json!(true)),
    ];
    EntityOp::Put { fields: fields.into_iter().map(|(k, v)| (k.to_string(), Some(v))).collect() }
}

fn rate(n: usize, secs: f64) -> String {
    format!("{n} in {secs:.3} s = {:.0}/s", n as f64 / secs)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let a = SqliteStore::open(&dir.path().join("a.db"))?;
    let b = SqliteStore::open(&dir.path().join("b.db"))?;
    let da = a.local_device_id(DeviceId::parse("till-a")?).await?;
    let db = b.local_device_id(DeviceId::parse("till-b")?).await?;

    // One batch of 10,000 single-op puts.
    let ops: Vec<_> = (0..10_000)
        .map(|i| Ok((EntityKey::new("warmup", format!("w{i}"))?, product(i))))
        .collect::<Result<_, Box<dyn Error>>>()?;
    let t = Instant::now();
    a.apply_local(&da, ops, Timestamp(1)).await?;
    println!("local, one batch of 10000:      {}", rate(10_000, t.elapsed().as_secs_f64()));

    // n puts in batches of 100.
    let t = Instant::now();
    for start in (0..n).step_by(100) {
        let ops = (start..(start + 100).min(n))
            .map(|i| Ok((EntityKey::new("product", format!("p{i}"))?, product(i))))
            .collect::<Result<Vec<_>, Box<dyn Error>>>()?;
        a.apply_local(&da, ops, Timestamp(2)).await?;
    }
    println!("local, batches of 100:          {}", rate(n, t.elapsed().as_secs_f64()));

    // Pull everything into b, batches of 100, as the sync loop does.
    let t = Instant::now();
    let mut applied = 0;
    loop {
        let cursor = b.peer_state(&da).await?.cursor;
        let known = b.known_origins().await?;
        let page = a.changes_after(cursor, 100, 1 << 20, &known).await?;
        let out = b.apply_remote(&da, page.changes, page.next, page.head).await?;
        applied += out.applied;
        if !page.has_more {
            break;
        }
    }
    println!("remote pull+apply, pages of 100: {}", rate(applied, t.elapsed().as_secs_f64()));

    // Page the log alone (serving side).
    let t = Instant::now();
    let (mut after, mut served) = (0, 0);
    loop {
        let page = a.changes_after(after, 100, 1 << 20, &VectorClock::new()).await?;
        served += page.changes.len();
        after = page.next;
        if !page.has_more {
            break;
        }
    }
    println!("changes_after, pages of 100:    {}", rate(served, t.elapsed().as_secs_f64()));

    // A puller that knows everything walks the whole log.
    let known = b.known_origins().await?;
    let t = Instant::now();
    let (mut after, mut calls) = (0, 0);
    loop {
        let page = a.changes_after(after, 100, 1 << 20, &known).await?;
        calls += 1;
        after = page.next;
        if !page.has_more {
            break;
        }
    }
    println!("changes_after, all known:       {} rows in {calls} calls, {:.3} s", after, t.elapsed().as_secs_f64());

    let t = Instant::now();
    let (dga, dgb) = (a.digest().await?, b.digest().await?);
    println!("digest ×2:                      {} entities each, {:.3} s", dga.entities, t.elapsed().as_secs_f64());
    if dga != dgb {
        return Err("digests differ after the pull".into());
    }
    let t = Instant::now();
    b.digest().await?;
    println!("digest:                         {} entities, {:.3} s", dgb.entities, t.elapsed().as_secs_f64());

    // Concurrent reads while b writes, through the reader pool.
    let t = Instant::now();
    let reads = {
        let b2 = b.clone();
        tokio::spawn(async move {
            let mut k = 0;
            for i in 0..20_000 {
                let key = EntityKey::new("product", format!("p{}", i % n.max(1)))?;
                if b2.entity(&key).await?.is_some() {
                    k += 1;
                }
            }
            Ok::<_, Box<dyn Error + Send + Sync>>(k)
        })
    };
    for start in (0..10_000).step_by(100) {
        let ops = (start..start + 100)
            .map(|i| Ok((EntityKey::new("sale", format!("s{i}"))?, product(i))))
            .collect::<Result<Vec<_>, Box<dyn Error>>>()?;
        b.apply_local(&db, ops, Timestamp(3)).await?;
    }
    let found = reads.await?.map_err(|e| e.to_string())?;
    println!("20000 point reads beside 10000 writes: {:.3} s ({found} found)", t.elapsed().as_secs_f64());
    Ok(())
}
