//! Figure 2, local write throughput: single-entity PUTs over HTTP from concurrent
//! clients (writes/s, p50/p99), vs. bare SQLite single-row transactions.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::terminal::{self, Term, ADMIN_TOKEN};
use super::{baseline, data, Ctx, Figure};

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<()> {
    let clients = ctx.opts.local_clients;
    let secs = ctx.opts.local_secs;
    let t = Term::start(&ctx.server, "bench-local", &[])?;
    // Warm-up: connections, page cache, prepared statements.
    for k in 0..200 {
        t.ok(
            reqwest::Method::PUT,
            &format!("/api/entities/product/warm{k}"),
            Some(&json!({"fields": data::product_fields(k)})),
        )?;
    }
    eprintln!("[local] {clients} clients PUT /api/entities/product/{{id}} for {secs} s");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let url = t.url.clone();
            std::thread::spawn(move || -> Result<(Vec<u64>, u64)> {
                let client = terminal::client()?;
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                let mut k = 0usize;
                while Instant::now() < deadline {
                    let body = json!({"fields": data::product_fields(c * 10_000_000 + k)}).to_string();
                    let t1 = Instant::now();
                    let resp = client
                        .put(format!("{url}/api/entities/product/w{c}-{k}"))
                        .bearer_auth(ADMIN_TOKEN)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()?;
                    let ok = resp.status().is_success();
                    let _ = resp.bytes()?;
                    lat.push(t1.elapsed().as_micros() as u64);
                    if !ok {
                        errors += 1;
                    }
                    k += 1;
                }
                Ok((lat, errors))
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(t.pid());
    drop(t);
    if errors > 0 {
        bail!("{errors} of {} single writes failed", lat.len());
    }
    lat.sort_unstable();
    let rate = lat.len() as f64 / elapsed;
    let (p50, p99) = (percentile(&lat, 0.5) / 1000.0, percentile(&lat, 0.99) / 1000.0);

    eprintln!("[local] baseline: bare SQLite, one row per transaction, one thread, up to 3 s");
    let rows = data::rows(0..300_000);
    let (base_rate, mut base_lat) = baseline::single_row_transactions(&rows, Duration::from_secs(3))?;
    drop(rows);
    base_lat.sort_unstable();
    let (b50, b99) = (percentile(&base_lat, 0.5) / 1000.0, percentile(&base_lat, 0.99) / 1000.0);
    ctx.detail(
        "local",
        json!({
            "clients": clients, "seconds": elapsed, "writes": lat.len(), "writes_per_s": rate,
            "p50_ms": p50, "p99_ms": p99, "max_ms": lat.last().copied().unwrap_or(0) as f64 / 1000.0,
            "server_cpu_s": server_cpu,
            "baseline_tx_per_s": base_rate, "baseline_p50_ms": b50, "baseline_p99_ms": b99,
        }),
    );
    ctx.push(
        Figure::new("local.single_writes", rate, "writes/s")
            .vs_rate(base_rate, "tx/s", "bare SQLite, 1 row/tx, one thread")
            .info(format!(
                "{} PUTs from {clients} concurrent HTTP clients in {elapsed:.1} s (clients share the 2 cores)",
                lat.len()
            )),
    );
    ctx.push(
        Figure::new("local.single_p50", p50, "ms")
            .vs_time(b50, "ms", "bare SQLite single-row tx")
            .info(format!("{clients} concurrent clients")),
    );
    ctx.push(
        Figure::new("local.single_p99", p99, "ms")
            .vs_time(b99, "ms", "bare SQLite single-row tx")
            .info(format!("{clients} concurrent clients")),
    );
    Ok(())
}

/// User + system CPU seconds of a process so far (from /proc/<pid>/stat).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after "pid (comm) ".
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
