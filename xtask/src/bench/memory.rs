//! Figure 5, memory: peak RSS of a real terminal holding up to 1,000,000 changes
//! while a peer pulls them all. The size is cut to what fits the time budget (and
//! the figure then says so).

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::sync::{load, pull_until_equal, BATCH};
use super::terminal::Term;
use super::{num, Ctx, Figure};

/// Kept free at the end of the budget.
const MARGIN: Duration = Duration::from_secs(20);

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<()> {
    let max_n = ctx.opts.memory_n;
    let mut a = Term::start(&ctx.server, "bench-mem-a", &[])?;
    let b = Term::start(&ctx.server, "bench-mem-b", &[])?;
    let start = Instant::now();
    let base_rss = a.status_kb("VmRSS")?;
    // Seconds per change of the sync, as measured by `sync` (pessimistic guess otherwise);
    // a bigger log syncs somewhat slower, hence the factors below.
    let sync_per = ctx.sync_rate.map_or(1.0 / 5_000.0, |r| 1.0 / r);
    let mut target = max_n;
    // The `year` section runs after this one: its time is not ours.
    let later = if ctx.opts.only.iter().any(|s| s == "year") {
        Duration::from_secs(super::year::planned_secs(&ctx.opts))
    } else {
        Duration::ZERO
    };
    let remaining = ctx.remaining().saturating_sub(MARGIN + later);
    eprintln!("[memory] loading up to {max_n} changes into A ({:.0} s of the budget left)", remaining.as_secs_f64());
    let (n, in_requests) = load(&a, max_n, |done, _spent| {
        let per = start.elapsed().as_secs_f64() / done as f64;
        let left = remaining.as_secs_f64() - start.elapsed().as_secs_f64();
        // (target - done)·per·1.1 + target·sync_per·1.3 + 15 ≤ left
        let fit = (left - 15.0 + done as f64 * per * 1.1) / (per * 1.1 + sync_per * 1.3);
        let fit = ((fit.max(0.0) as usize) / BATCH * BATCH).max(done);
        if fit < target {
            target = fit;
        }
        if done % 100_000 == 0 || done >= target {
            eprintln!("[memory]   {done} loaded in {:.0} s; planned size {target}", start.elapsed().as_secs_f64());
        }
        Ok(done < target)
    })?;
    let load_s = start.elapsed().as_secs_f64();
    let a_load_hwm = a.status_kb("VmHWM")?;
    let a_loaded_rss = a.status_kb("VmRSS")?;
    // What loading through the API left in the allocator is not what holding the
    // changes costs: restart A on its data dir, so it serves from a cold process.
    let t = Instant::now();
    a.restart(&ctx.server, "bench-mem-a", &[])?;
    let restart_s = t.elapsed().as_secs_f64();
    let a_rss = a.status_kb("VmRSS")?;
    a.reset_peak_rss()?;
    b.reset_peak_rss()?;
    eprintln!("[memory] B pulls all {n} changes from A");
    let (took, calls, pulled) = pull_until_equal(&a, &b, ctx.remaining())?;
    let a_serve_hwm = a.status_kb("VmHWM")?;
    let b_hwm = b.status_kb("VmHWM")?;
    let a_disk = a.data_bytes();
    drop((a, b));
    let reduced = n < max_n;
    ctx.detail(
        "memory",
        json!({
            "changes": n, "requested": max_n, "reduced_to_fit_budget": reduced,
            "load_s": load_s, "load_request_s": in_requests.as_secs_f64(),
            "sync_s": took.as_secs_f64(), "sync_now_calls": calls, "pulled": pulled,
            "a_rss_start_kb": base_rss, "a_peak_rss_loading_kb": a_load_hwm, "a_rss_after_loading_kb": a_loaded_rss,
            "restart_s": restart_s, "a_rss_restarted_before_serving_kb": a_rss,
            "a_peak_rss_serving_kb": a_serve_hwm, "b_peak_rss_applying_kb": b_hwm, "a_data_dir_bytes": a_disk,
        }),
    );
    let size_note = if reduced {
        format!(
            "REDUCED to {} changes (largest that fits the {} s budget; 1,000,000 would take ~{:.0} s more)",
            num(n as f64),
            ctx.opts.budget.as_secs(),
            (max_n - n) as f64 * (load_s / n as f64 + took.as_secs_f64() / n as f64)
        )
    } else {
        format!("{} changes", num(n as f64))
    };
    ctx.push(
        Figure::new("memory.peak_rss_serving", mib(a_serve_hwm), "MiB").info(format!(
            "{size_note}; A (restarted on its data dir after the load) peak while B pulled everything ({:.1} s, {} changes/s), {:.0} MiB at rest before; B peak while applying {:.0} MiB; before the restart A held {:.0} MiB after loading through the batch API (peak {:.0} MiB); A's data dir {:.0} MiB; load {:.0} s",
            took.as_secs_f64(),
            num(n as f64 / took.as_secs_f64()),
            mib(a_rss),
            mib(b_hwm),
            mib(a_loaded_rss),
            mib(a_load_hwm),
            a_disk as f64 / 1048576.0,
            load_s
        )),
    );
    let base = ctx.baseline_100()?;
    ctx.push(
        Figure::new("memory.sync_throughput", n as f64 / took.as_secs_f64(), "changes/s")
            .vs_rate(base, "rows/s", "bare SQLite, 100 single-row INSERTs/tx")
            .info(format!("sync figure at {} changes", num(n as f64))),
    );
    Ok(())
}
