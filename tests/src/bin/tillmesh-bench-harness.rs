//! `tillmesh-bench-harness`: the in-process parts of `cargo xtask bench` (figures 3
//! and 4), on [`tillmesh_tests::cluster::Cluster`]. Prints progress on stderr and one
//! JSON object on stdout for xtask to parse.
//!
//! ```text
//! tillmesh-bench-harness convergence [--sizes 10,50,100] [--writes 100] [--groups 4] [--max-rounds 40]
//! tillmesh-bench-harness catchup [--changes 50000] [--mesh 5] [--rejoin-links 5] [--max-rounds 20]
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tillmesh_domain::{EntityKey, EntityOp};
use tillmesh_tests::cluster::Cluster;

/// Tiny deterministic generator (xorshift64*), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn put(fields: Value) -> EntityOp {
    let fields = match fields {
        Value::Object(m) => m.into_iter().map(|(k, v)| (k, Some(v))).collect(),
        _ => BTreeMap::new(),
    };
    EntityOp::Put { fields }
}

/// A POS-sized product (~300 bytes of JSON, ten fields), as xtask's bench data.
fn product(i: usize) -> EntityOp {
    put(json!({
        "name": format!("Organic whole milk 1 l, item {i}"),
        "sku": format!("SKU-{i:08}"),
        "barcode": format!("50{i:011}"),
        "price_cents": 99 + (i * 37) % 5000,
        "vat_rate": ([0.055, 0.1, 0.2][i % 3]),
        "category": (["bakery", "dairy", "drinks", "frozen", "produce", "household"][i % 6]),
        "brand": format!("Brand {}", i % 250),
        "unit": if i.is_multiple_of(5) { "kg" } else { "piece" },
        "active": !i.is_multiple_of(17),
        "description": format!(
            "Shelf {} / aisle {}: store brand, keep refrigerated below 7 C, best before printed on lid",
            i % 40,
            i % 12
        ),
    }))
}

/// A sale line (~250 bytes).
fn sale(terminal: usize, k: usize) -> EntityOp {
    put(json!({
        "terminal": format!("till-{terminal}"),
        "receipt": format!("R-{terminal:03}-{k:06}"),
        "product": format!("p{:08}", (terminal * 7919 + k) % 5000),
        "quantity": 1 + k % 4,
        "unit_price_cents": 99 + (k * 37) % 5000,
        "total_cents": (1 + k % 4) * (99 + (k * 37) % 5000),
        "payment": (["card", "cash", "voucher"][k % 3]),
        "cashier": format!("cashier-{}", terminal % 7),
        "at": format!("2026-11-25T10:{:02}:{:02}Z", k / 60 % 60, k % 60),
    }))
}

async fn apply(c: &Cluster, i: usize, ops: Vec<(EntityKey, EntityOp)>) -> Result<()> {
    c.state(i).entities.apply(ops).await?;
    Ok(())
}

/// One round over `members`: each syncs once with every peer it knows, concurrently.
/// Returns the changes each pulled, in `members` order.
async fn round(c: &Cluster, members: &[usize]) -> Result<Vec<u64>> {
    let runs = members.iter().map(|&i| c.sync(i));
    futures::future::join_all(runs).await.into_iter().collect()
}

/// Whether the digests of each group are all equal.
fn groups_equal(digests: &[String], groups: &[Vec<usize>]) -> bool {
    groups.iter().all(|g| g.windows(2).all(|w| digests[w[0]] == digests[w[1]]))
}

/// Rounds over `members` until every group in `groups` agrees.
async fn rounds_until(
    c: &Cluster,
    members: &[usize],
    groups: &[Vec<usize>],
    max_rounds: usize,
    label: &str,
) -> Result<Value> {
    let t0 = Instant::now();
    let (mut sync_s, mut pulled) = (0.0, 0u64);
    let mut by_member = vec![0u64; members.len()];
    for r in 1..=max_rounds {
        let t = Instant::now();
        let per = round(c, members).await?;
        let dt = t.elapsed().as_secs_f64();
        sync_s += dt;
        let p: u64 = per.iter().sum();
        pulled += p;
        for (acc, x) in by_member.iter_mut().zip(&per) {
            *acc += x;
        }
        let digests = c.digests().await?;
        eprintln!("[harness]   {label} round {r}: {p} changes pulled in {dt:.2} s");
        if groups_equal(&digests, groups) {
            return Ok(json!({
                "rounds": r, "wall_s": t0.elapsed().as_secs_f64(), "sync_s": sync_s, "pulled": pulled,
                "pulled_by": by_member,
            }));
        }
    }
    bail!("{label}: no convergence within {max_rounds} rounds ({pulled} changes pulled)")
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let v = args.get(i + 1).with_context(|| format!("{name} needs a value"))?;
            v.parse().map_err(|e| anyhow::anyhow!("{name} {v:?}: {e}"))
        }
        None => Ok(default),
    }
}

async fn convergence_run(n: usize, writes: usize, ngroups: usize, max_rounds: usize) -> Result<Value> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let t = Instant::now();
    let c = Cluster::spawn(n).await?;
    let spawn_s = t.elapsed().as_secs_f64();
    let groups: Vec<Vec<usize>> = (0..ngroups).map(|g| (0..n).filter(|i| i % ngroups == g).collect()).collect();
    // Within a group: the ring successor plus up to two random members.
    let mut links = 0;
    for g in &groups {
        for (pos, &i) in g.iter().enumerate() {
            if g.len() < 2 {
                continue;
            }
            let mut peers = vec![g[(pos + 1) % g.len()]];
            for _ in 0..2 {
                let p = g[rng.below(g.len())];
                if p != i && !peers.contains(&p) {
                    peers.push(p);
                }
            }
            for p in peers {
                c.link(i, p).await?;
                links += 1;
            }
        }
    }
    eprintln!("[harness] N={n}: {n} terminals up in {spawn_s:.1} s, {links} links inside {ngroups} groups");
    // Every terminal writes while partitioned: mostly new sales, plus concurrent price
    // edits (conflicts) and stock adjustments (counters) of 20 shared products.
    let t = Instant::now();
    let writers = (0..n).map(|i| {
        let c = &c;
        async move {
            for k in 0..writes {
                let op = match k % 10 {
                    0 => (
                        EntityKey::new("product", format!("shared{:02}", (i + k) % 20))?,
                        EntityOp::Counter { field: "stock".into(), delta: -1 - (k % 3) as i64 },
                    ),
                    5 => (
                        EntityKey::new("product", format!("shared{:02}", (i * 3 + k) % 20))?,
                        put(json!({"price_cents": 100 + i + k})),
                    ),
                    _ => (EntityKey::new("sale", format!("s{i:03}-{k:04}"))?, sale(i, k)),
                };
                apply(c, i, vec![op]).await?;
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    for r in futures::future::join_all(writers).await {
        r?;
    }
    let write_s = t.elapsed().as_secs_f64();
    eprintln!("[harness] N={n}: {} writes in {write_s:.1} s", n * writes);
    let all: Vec<usize> = (0..n).collect();
    let mut partition = rounds_until(&c, &all, &groups, max_rounds, &format!("N={n} partitioned")).await?;
    if let Some(o) = partition.as_object_mut() {
        o.remove("pulled_by");
    }
    // Heal: every terminal also pulls from one random terminal of another group.
    for i in 0..n {
        let mut p = rng.below(n);
        while p % ngroups == i % ngroups && ngroups > 1 {
            p = rng.below(n);
        }
        c.link(i, p).await?;
    }
    let mut heal = rounds_until(&c, &all, std::slice::from_ref(&all), max_rounds, &format!("N={n} healed")).await?;
    if let Some(o) = heal.as_object_mut() {
        o.remove("pulled_by");
    }
    let d = c.state(0).store.digest().await?;
    c.shutdown().await;
    Ok(json!({
        "n": n, "groups": ngroups, "writes_per_terminal": writes, "links_in_groups": links,
        "spawn_s": spawn_s, "write_s": write_s, "partition": partition, "heal": heal,
        "entities": d.entities, "open_conflicts": d.open_conflicts,
    }))
}

async fn convergence(args: &[String]) -> Result<Value> {
    let sizes: String = arg(args, "--sizes", "10,50,100".to_string())?;
    let writes = arg(args, "--writes", 100usize)?;
    let ngroups = arg(args, "--groups", 4usize)?;
    let max_rounds = arg(args, "--max-rounds", 40usize)?;
    let mut runs = Vec::new();
    for n in sizes.split(',') {
        let n: usize = n.trim().parse()?;
        runs.push(convergence_run(n, writes, ngroups, max_rounds).await?);
    }
    Ok(json!({ "runs": runs }))
}

async fn catchup(args: &[String]) -> Result<Value> {
    let changes = arg(args, "--changes", 50_000usize)?;
    let mesh = arg(args, "--mesh", 5usize)?;
    let max_rounds = arg(args, "--max-rounds", 20usize)?;
    // How many mesh terminals the rejoining terminal pulls from (default: all, as with mDNS).
    let rejoin_links = arg(args, "--rejoin-links", mesh)?.clamp(1, mesh);
    let offline_writes = 500;
    let r = mesh; // the terminal that goes offline
    let c = Cluster::spawn(mesh + 1).await?;
    let mesh_ids: Vec<usize> = (0..mesh).collect();
    for a in 0..mesh {
        for b in 0..mesh {
            if a != b {
                c.link(a, b).await?;
            }
        }
        if a < rejoin_links {
            c.link(r, a).await?; // r pulls from the mesh; the mesh learns of r on rejoin
        }
    }
    // Shared history: 200 products per mesh terminal, synced everywhere.
    for i in 0..mesh {
        let ops = (0..200)
            .map(|k| Ok((EntityKey::new("product", format!("p{:08}", i * 200 + k))?, product(i * 200 + k))))
            .collect::<Result<Vec<_>>>()?;
        apply(&c, i, ops).await?;
    }
    let everyone: Vec<usize> = (0..=mesh).collect();
    let initial = rounds_until(&c, &everyone, std::slice::from_ref(&everyone), max_rounds, "initial").await?;
    // r is offline: the mesh writes `changes` changes (new products and price updates)
    // and syncs among itself; r makes sales of its own.
    let t = Instant::now();
    let per = changes / mesh;
    for i in 0..mesh {
        for chunk in (0..per).collect::<Vec<_>>().chunks(1000) {
            let ops = chunk
                .iter()
                .map(|&k| {
                    let n = 1000 + i * per + k;
                    if k % 10 == 9 {
                        let old = (i * 7 + k) % (mesh * 200);
                        Ok((EntityKey::new("product", format!("p{old:08}"))?, put(json!({"price_cents": 100 + k}))))
                    } else {
                        Ok((EntityKey::new("product", format!("p{n:08}"))?, product(n)))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            apply(&c, i, ops).await?;
        }
    }
    for chunk in (0..offline_writes).collect::<Vec<_>>().chunks(100) {
        let ops = chunk
            .iter()
            .map(|&k| Ok((EntityKey::new("sale", format!("r{k:05}"))?, sale(r, k))))
            .collect::<Result<Vec<_>>>()?;
        apply(&c, r, ops).await?;
    }
    let write_s = t.elapsed().as_secs_f64();
    eprintln!("[harness] catch-up: {} mesh changes written in {write_s:.1} s; mesh syncs without r", per * mesh);
    let mesh_sync = rounds_until(&c, &mesh_ids, std::slice::from_ref(&mesh_ids), max_rounds, "mesh").await?;
    // r rejoins: the mesh pairs with it again, everyone syncs until all agree.
    for i in 0..mesh {
        c.link(i, r).await?;
    }
    let rejoin = rounds_until(&c, &everyone, std::slice::from_ref(&everyone), max_rounds, "rejoin").await?;
    let d = c.state(r).store.digest().await?;
    // `everyone` is 0..=mesh, so r's count is the last.
    let r_pulled = rejoin["pulled_by"][r].as_u64().unwrap_or_default();
    c.shutdown().await;
    Ok(json!({
        "mesh": mesh, "rejoin_links": rejoin_links, "changes": per * mesh, "offline_writes": offline_writes,
        "initial": initial,
        "offline": { "write_s": write_s, "mesh_converge_s": mesh_sync["wall_s"], "mesh": mesh_sync },
        "rejoin": {
            "rounds": rejoin["rounds"], "wall_s": rejoin["wall_s"], "sync_s": rejoin["sync_s"],
            "pulled_all_terminals": rejoin["pulled"],
            "rejoiner_pulled": r_pulled,
        },
        "entities": d.entities,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = Instant::now();
    let mut out = match args.first().map(String::as_str) {
        Some("convergence") => convergence(&args[1..]).await?,
        Some("catchup") => catchup(&args[1..]).await?,
        _ => bail!("usage: tillmesh-bench-harness convergence|catchup [options] (see the file header)"),
    };
    out["harness_s"] = json!(t.elapsed().as_secs_f64());
    println!("{out}");
    Ok(())
}
