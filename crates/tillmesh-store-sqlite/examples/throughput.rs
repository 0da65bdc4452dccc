//! Throughput of the SQLite store, in release: local writes (one batch of 10,000 ops,
//! then 3 rounds of N single-op puts in batches of 100, each followed by N bare SQLite
//! INSERTs of rows as large as a change record, the baseline), remote application of
//! all those into a second store in batches of 100, log paging, and the digest.
//!
//! `cargo run -p tillmesh-store-sqlite --release --example throughput [N]`
//!
//! Each line gives the wall-clock rate and, on Linux, the rate per CPU-second of the
//! whole process (all threads), which stays meaningful on a busy machine.

// The allocator `terminal-server` runs with, so that these figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// CPU time of this process (user + system, all threads), from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// A phase being timed: wall clock and process CPU time.
struct Phase {
    wall: Instant,
    cpu: Option<f64>,
}

impl Phase {
    fn start() -> Self {
        Self { wall: Instant::now(), cpu: cpu_seconds() }
    }

    fn wall(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }

    fn rate(&self, n: usize) -> String {
        let secs = self.wall();
        let cpu = match (self.cpu, cpu_seconds()) {
            (Some(a), Some(b)) if b > a => format!(", {:.0}/CPU-s", n as f64 / (b - a)),
            _ => String::new(),
        };
        format!("{n} in {secs:.3} s = {:.0}/s{cpu}", n as f64 / secs)
    }
}

diesel::table! {
    bare (id) {
        id -> BigInt,
        k -> Text,
        v -> Text,
    }
}

/// Baseline: plain single-row INSERTs of `rows` (key, payload) into a plain table, 100
/// per transaction, on a connection with the store's pragmas; rows per second.
fn bare_inserts(
    conn: &mut diesel::SqliteConnection,
    first_id: usize,
    rows: &[(String, String)],
) -> Result<f64, Box<dyn Error>> {
    use diesel::prelude::*;
    let t = Instant::now();
    for (c, chunk) in rows.chunks(100).enumerate() {
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            for (i, (k, v)) in chunk.iter().enumerate() {
                let id = (first_id + c * 100 + i) as i64;
                diesel::insert_into(bare::table)
                    .values((bare::id.eq(id), bare::k.eq(k), bare::v.eq(v)))
                    .execute(conn)?;
            }
            Ok(())
        })?;
    }
    Ok(rows.len() as f64 / t.elapsed().as_secs_f64())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
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
    let t = Phase::start();
    a.apply_local(&da, ops, Timestamp(1)).await?;
    println!("local, one batch of 10000:       {}", t.rate(10_000));

    // n puts in batches of 100, against bare INSERTs of rows as large as the records
    // those puts append. Rounds alternate between the two so that a busy machine
    // slows both alike; the ratio is of the medians. Inputs are built before timing.
    const ROUNDS: usize = 3;
    let bare_path = dir.path().join("bare.db");
    let mut bare_conn = {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut conn = diesel::SqliteConnection::establish(&bare_path.display().to_string())?;
        conn.batch_execute(tillmesh_store_sqlite::CONNECTION_PRAGMAS)?;
        conn.batch_execute("CREATE TABLE bare (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL);")?;
        conn
    };
    let (mut adapter_rates, mut bare_rates, mut record_bytes) = (Vec::new(), Vec::new(), 0);
    for round in 0..ROUNDS {
        let batches = (0..n)
            .step_by(100)
            .map(|start| {
                (start..(start + 100).min(n))
                    .map(|i| Ok((EntityKey::new("product", format!("p{round}-{i}"))?, product(i))))
                    .collect::<Result<Vec<_>, Box<dyn Error>>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let t = Phase::start();
        for ops in batches {
            a.apply_local(&da, ops, Timestamp(2)).await?;
        }
        adapter_rates.push(n as f64 / t.wall());
        println!("local, batches of 100 (round {}): {}", round + 1, t.rate(n));
        if round == 0 {
            let head = a.log_head().await?;
            let last = a.changes_after(head - 1, 1, 1 << 20, &VectorClock::new()).await?;
            record_bytes = serde_json::to_string(&last.changes)?.len() - 2;
        }
        let rows: Vec<(String, String)> = (0..n).map(|i| (format!("p{round}-{i}"), "x".repeat(record_bytes))).collect();
        bare_rates.push(bare_inserts(&mut bare_conn, round * n, &rows)?);
    }
    let (adapter_rate, bare_rate) = (median(adapter_rates), median(bare_rates));
    println!(
        "adapter, batches of 100: {adapter_rate:.0}/s; bare INSERTs of {record_bytes}-byte rows, 100/tx: \
         {bare_rate:.0}/s (medians of {ROUNDS}); ratio {:.2}x (target 3x)",
        bare_rate / adapter_rate
    );

    // Pull everything into b, batches of 100, as the sync loop does.
    let t = Phase::start();
    let mut applied = 0;
    loop {
        let cursor = b.peer_state(&da).await?.cursor;
        let known = b.known_origins().await?;
        let page = a.changes_after(cursor, 100, 1 << 20, &known).await?;
        let out = b.apply_remote(&da, page.changes, page.next, page.head, None, None).await?;
        applied += out.applied;
        if !page.has_more {
            break;
        }
    }
    println!("remote pull+apply, pages of 100: {}", t.rate(applied));

    // Page the log alone (serving side).
    let t = Phase::start();
    let (mut after, mut served) = (0, 0);
    loop {
        let page = a.changes_after(after, 100, 1 << 20, &VectorClock::new()).await?;
        served += page.changes.len();
        after = page.next;
        if !page.has_more {
            break;
        }
    }
    println!("changes_after, pages of 100:     {}", t.rate(served));

    // A puller that knows everything walks the whole log.
    let known = b.known_origins().await?;
    let t = Phase::start();
    let (mut after, mut calls) = (0, 0);
    loop {
        let page = a.changes_after(after, 100, 1 << 20, &known).await?;
        calls += 1;
        after = page.next;
        if !page.has_more {
            break;
        }
    }
    println!("changes_after, all known:        {after} rows in {calls} calls: {}", t.rate(usize::try_from(after)?));

    let t = Phase::start();
    let (dga, dgb) = (a.digest().await?, b.digest().await?);
    println!("digest ×2, entities:             {}", t.rate(2 * usize::try_from(dga.entities)?));
    if dga != dgb {
        return Err("digests differ after the pull".into());
    }
    let t = Phase::start();
    b.digest().await?;
    println!("digest, entities:                {}", t.rate(usize::try_from(dgb.entities)?));

    // Concurrent reads while b writes, through the reader pool.
    let t = Phase::start();
    let reads = {
        let b2 = b.clone();
        tokio::spawn(async move {
            let mut k = 0;
            for i in 0..20_000 {
                let key = EntityKey::new("product", format!("p0-{}", i % n.max(1)))?;
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
    println!("20000 point reads beside 10000 local writes on the same store: {:.3} s ({found} found)", t.wall());
    Ok(())
}
