//! Figures 3 and 4, run in `tillmesh-bench-harness` (a bin of the tests package:
//! many in-process terminals): convergence of partitioned-then-healed clusters of
//! growing size, and catch-up of a terminal that missed many changes.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{num, Ctx, Figure};

/// Runs the harness with `args`; returns the JSON object it prints last on stdout.
fn run_harness(ctx: &Ctx, args: &[String], timeout: Duration) -> Result<Value> {
    let mut child = Command::new(&ctx.harness)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", ctx.harness.display()))?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("harness {} did not finish within {:.0?}", args.join(" "), timeout);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("harness {} failed ({status})", args.join(" "));
    }
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{')).context("harness printed no JSON")?;
    Ok(serde_json::from_str(line)?)
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(f64::NAN)
}

/// Time to leave for the sections after this one.
fn reserve(ctx: &Ctx, later: &[&str], secs: u64) -> Duration {
    let n = later.iter().filter(|s| ctx.opts.only.iter().any(|o| o == *s)).count() as u64;
    Duration::from_secs(secs * n)
}

pub(crate) fn convergence(ctx: &mut Ctx) -> Result<()> {
    let sizes = ctx.opts.convergence_sizes.clone();
    let year = super::year::planned_secs(&ctx.opts);
    let timeout = ctx.remaining().saturating_sub(
        reserve(ctx, &["catchup"], 60) + reserve(ctx, &["memory"], 240) + reserve(ctx, &["year"], year),
    );
    let args = vec![
        "convergence".to_string(),
        "--sizes".into(),
        sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        "--writes".into(),
        ctx.opts.convergence_writes.to_string(),
        "--groups".into(),
        "4".into(),
    ];
    let out = run_harness(ctx, &args, timeout)?;
    ctx.detail("convergence", out.clone());
    let base = ctx.baseline_100()?;
    let runs = out["runs"].as_array().cloned().unwrap_or_default();
    let mut points = Vec::new();
    for r in &runs {
        let n = f(r, &["n"]);
        let total = f(r, &["partition", "wall_s"]) + f(r, &["heal", "wall_s"]);
        let applied = f(r, &["partition", "pulled"]) + f(r, &["heal", "pulled"]);
        points.push((n, total, applied));
        ctx.push(
            Figure::new(&format!("convergence.n{n}"), total, "s")
                .vs_time(applied / base, "s", "bare SQLite storing the same applied changes, 100/tx")
                .info(format!(
                    "{} writes/terminal, 4 groups: partitioned {} rounds {:.1} s, healed {} rounds {:.1} s; {} changes applied ({} per terminal), {} entities, {} open conflicts",
                    r["writes_per_terminal"],
                    r["partition"]["rounds"],
                    f(r, &["partition", "wall_s"]),
                    r["heal"]["rounds"],
                    f(r, &["heal", "wall_s"]),
                    num(applied),
                    num(applied / n),
                    r["entities"],
                    r["open_conflicts"],
                )),
        );
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        if last.0 > first.0 && first.1 > 0.0 {
            let k = (last.1 / first.1).ln() / (last.0 / first.0).ln();
            let ka = (last.2 / first.2).ln() / (last.0 / first.0).ln();
            ctx.push(
                Figure::new("convergence.growth", k, "exponent (time ∝ N^k)")
                    .vs_time(ka, "", "exponent of the changes every terminal must apply (N terminals × N×writes)")
                    .info(format!(
                        "N {}→{}: time {:.1}→{:.1} s; per applied change {:.1}→{:.1} µs",
                        first.0,
                        last.0,
                        first.1,
                        last.1,
                        first.1 / first.2 * 1e6,
                        last.1 / last.2 * 1e6
                    )),
            );
        }
    }
    Ok(())
}

pub(crate) fn catchup(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.opts.catchup_n;
    let year = super::year::planned_secs(&ctx.opts);
    let timeout = ctx.remaining().saturating_sub(reserve(ctx, &["memory"], 240) + reserve(ctx, &["year"], year));
    let args = vec!["catchup".to_string(), "--changes".into(), n.to_string(), "--mesh".into(), "5".into()];
    let out = run_harness(ctx, &args, timeout)?;
    ctx.detail("catchup", out.clone());
    let base = ctx.baseline_100()?;
    let took = f(&out, &["rejoin", "wall_s"]);
    let pulled = f(&out, &["rejoin", "rejoiner_pulled"]);
    ctx.push(
        Figure::new("catchup.rejoin", took, "s")
            .vs_time(pulled / base, "s", "bare SQLite storing the same changes, 100/tx")
            .info(format!(
                "missed {} changes ({} pulled = {} changes/s) + its own {} offline writes, rejoining a {}-terminal mesh: {} rounds; mesh itself took {:.1} s to converge on the {} changes",
                num(n as f64),
                num(pulled),
                num(pulled / took),
                out["offline_writes"],
                out["mesh"],
                out["rejoin"]["rounds"],
                f(&out, &["offline", "mesh_converge_s"]),
                num(n as f64),
            )),
    );
    Ok(())
}
