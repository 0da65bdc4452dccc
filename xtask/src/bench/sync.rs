//! Figure 1, sync throughput between two real processes — and, from the same run,
//! the batch-API write figure of 2 (A's load of 10,000-op batches).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::terminal::Term;
use super::{baseline, data, num, Ctx, Figure};

/// Ops per batch call (the API's maximum).
pub(crate) const BATCH: usize = 10_000;
/// PouchDB 9 replication, 100,000 POS-sized docs, default settings (FACTS.md).
const POUCHDB_DOCS_PER_S: f64 = 3_700.0;

/// Loads products `0..n` into `t` through the batch API. Returns the time spent in
/// requests (body building excluded).
pub(crate) fn load(
    t: &Term,
    n: usize,
    mut each: impl FnMut(usize, Duration) -> Result<bool>,
) -> Result<(usize, Duration)> {
    let mut in_requests = Duration::ZERO;
    let mut done = 0;
    for start in (0..n).step_by(BATCH) {
        let end = (start + BATCH).min(n);
        let body = data::batch_body(start..end);
        let t1 = Instant::now();
        t.batch(body)?;
        in_requests += t1.elapsed();
        done = end;
        if !each(done, in_requests)? {
            break;
        }
    }
    Ok((done, in_requests))
}

/// B pairs with A and syncs until its digest is A's. Returns (time, sync/now calls, pulled).
pub(crate) fn pull_until_equal(a: &Term, b: &Term, limit: Duration) -> Result<(Duration, u32, u64)> {
    let (want, _) = a.digest()?;
    let t0 = Instant::now();
    b.pair(a)?;
    let (mut calls, mut pulled) = (0u32, 0u64);
    loop {
        pulled += b.sync_now()?;
        calls += 1;
        if b.digest()?.0 == want {
            return Ok((t0.elapsed(), calls, pulled));
        }
        if t0.elapsed() > limit {
            bail!("B not in sync with A after {:.0?} ({calls} sync/now calls, {pulled} pulled)", t0.elapsed());
        }
    }
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.opts.sync_n;
    let a = Term::start(&ctx.server, "bench-a", &[])?;
    let b = Term::start(&ctx.server, "bench-b", &[])?;
    eprintln!("[sync] loading {n} changes into A through POST /api/entities/batch ({BATCH} ops per call)");
    let t_load = Instant::now();
    let (_, in_requests) = load(&a, n, |done, spent| {
        eprintln!("[sync]   {done} loaded, {:.1} s in requests", spent.as_secs_f64());
        Ok(true)
    })?;
    let load_wall = t_load.elapsed();
    let batch_rate = n as f64 / in_requests.as_secs_f64();
    ctx.load_rate = Some(batch_rate);

    eprintln!("[sync] B pairs with A and runs sync/now until the digests match");
    let (took, calls, pulled) = pull_until_equal(&a, &b, ctx.remaining())?;
    let rate = n as f64 / took.as_secs_f64();
    ctx.sync_rate = Some(rate);
    let (digest, entities) = b.digest()?;
    let (a_rss, b_rss) = (a.status_kb("VmHWM")?, b.status_kb("VmHWM")?);
    drop((a, b));

    eprintln!("[sync] baselines: bare SQLite, the same {n} rows");
    let base_100 = ctx.baseline_100()?;
    let rows = data::rows(0..n);
    let base_batch = baseline::insert_rate(&rows, BATCH)?;
    let base_keyed = baseline::insert_rate_keyed(&rows, 100)?;
    drop(rows);

    ctx.detail(
        "sync",
        json!({
            "changes": n, "sync_s": took.as_secs_f64(), "sync_now_calls": calls, "pulled": pulled,
            "entities": entities, "digest": digest, "load_request_s": in_requests.as_secs_f64(),
            "load_wall_s": load_wall.as_secs_f64(), "a_peak_rss_kb": a_rss, "b_peak_rss_kb": b_rss,
            "baseline_rows_per_s_100_per_tx": base_100, "baseline_rows_per_s_batch_tx": base_batch,
            "baseline_rows_per_s_100_per_tx_keyed": base_keyed,
            "pouchdb_docs_per_s": POUCHDB_DOCS_PER_S,
        }),
    );
    ctx.push(
        Figure::new("sync.throughput", rate, "changes/s")
            .vs_rate(base_100, "rows/s", "bare SQLite, 100 single-row INSERTs/tx")
            .target_ratio(4.0)
            .info(format!(
                "{n} changes A→B, pair to equal digests in {:.1} s ({calls} sync/now); bare SQLite into a (type,id)-keyed table: {} rows/s; PouchDB 9 ~{} docs/s (FACTS.md): {:.1}x that",
                took.as_secs_f64(),
                num(base_keyed),
                num(POUCHDB_DOCS_PER_S),
                rate / POUCHDB_DOCS_PER_S
            )),
    );
    ctx.push(
        Figure::new("local.batch_writes", batch_rate, "writes/s")
            .vs_rate(base_batch, "rows/s", &format!("bare SQLite, {BATCH} single-row INSERTs/tx"))
            .info(format!(
                "{} × {BATCH}-op POST /api/entities/batch, one client, {:.1} s in requests",
                n.div_ceil(BATCH),
                in_requests.as_secs_f64()
            )),
    );
    Ok(())
}
