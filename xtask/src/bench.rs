//! `cargo xtask bench`: the benchmarks of issue 10, each printed beside a baseline
//! measured in the same run, and written as JSON to `<target dir>/bench.json`.
//!
//! ```text
//! cargo xtask bench [--only sync,local,convergence,catchup,memory,year] [--quick]
//!                   [--budget SECS] [--year-days N] [--no-build]
//! ```
//!
//! 1. `sync`: two real `terminal-server` processes; B pairs with A, which holds
//!    100,000 changes, and pulls until the digests match (changes/s end to end), vs.
//!    bare SQLite inserting the same rows 100 per transaction. A's load through the
//!    batch API (10 × 10,000 ops) is also the batch-write figure of 2.
//! 2. `local`: single-entity PUTs from 8 concurrent clients for 10 s (writes/s,
//!    p50/p99), vs. bare SQLite single-row transactions.
//! 3. `convergence`: 10/50/100 in-process terminals, partitioned in 4 groups, then
//!    healed (`tillmesh-bench-harness`, a bin of the tests package).
//! 4. `catchup`: a terminal that missed 50,000 changes rejoins a 5-terminal mesh.
//! 5. `memory`: peak RSS of a terminal holding up to 1,000,000 changes while a peer
//!    pulls them all (reduced to what fits the time budget, and then said so).
//! 6. `year`: a year in a store, compressed: 5 real terminals on fixed ports, each
//!    restarted every day (`kill -9` about once a month), Zipf-popular sales, price
//!    edits, conflicts resolved by an operator, terminal 4 replaced mid-year; sale
//!    rate, hot record size, disk use and a fresh terminal's bootstrap at the end of
//!    the year vs. day 1 (`--year-days`, default 365; 60 with `--quick`).
//!
//! Everything runs in release: the (debug) `cargo xtask` builds the server, the
//! harness and xtask itself with `--release`, then re-runs itself from the release
//! build, so the load generators and the SQLite baseline are optimised too.

mod baseline;
mod data;
mod harness;
mod local;
mod memory;
mod sync;
mod terminal;
mod year;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// The sections, in the order they run.
const SECTIONS: [&str; 6] = ["sync", "local", "convergence", "catchup", "memory", "year"];

/// Command-line options and the sizes they imply.
#[derive(Clone, Debug)]
pub(crate) struct Opts {
    only: Vec<String>,
    no_build: bool,
    /// Budget of the measurements (the release build not included).
    pub budget: Duration,
    /// Changes A holds for the sync figure.
    pub sync_n: usize,
    /// Seconds of concurrent single writes.
    pub local_secs: u64,
    /// Concurrent single-write clients.
    pub local_clients: usize,
    /// Cluster sizes of the convergence figure.
    pub convergence_sizes: Vec<usize>,
    /// Writes per terminal in the convergence figure.
    pub convergence_writes: usize,
    /// Changes missed by the rejoining terminal.
    pub catchup_n: usize,
    /// Changes held for the memory figure (upper bound; the budget may lower it).
    pub memory_n: usize,
    /// Simulated days of the year figure.
    pub year_days: u32,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Opts {
            only: SECTIONS.iter().map(|s| s.to_string()).collect(),
            no_build: false,
            budget: Duration::from_secs(1200),
            sync_n: 100_000,
            local_secs: 10,
            local_clients: 8,
            convergence_sizes: vec![10, 50, 100],
            convergence_writes: 100,
            catchup_n: 50_000,
            memory_n: 1_000_000,
            year_days: 365,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--no-build" => o.no_build = true,
                "--quick" => {
                    o.sync_n = 20_000;
                    o.local_secs = 3;
                    o.convergence_sizes = vec![10, 20];
                    o.catchup_n = 10_000;
                    o.memory_n = 100_000;
                    o.year_days = 60;
                }
                "--only" => {
                    let v = value("--only")?;
                    o.only = v.split(',').map(|s| s.trim().to_string()).collect();
                    for s in &o.only {
                        if !SECTIONS.contains(&s.as_str()) {
                            bail!("unknown section {s:?}; sections: {}", SECTIONS.join(","));
                        }
                    }
                }
                "--budget" => o.budget = Duration::from_secs(value("--budget")?.parse()?),
                "--sync-n" => o.sync_n = value("--sync-n")?.parse()?,
                "--memory-n" => o.memory_n = value("--memory-n")?.parse()?,
                "--catchup-n" => o.catchup_n = value("--catchup-n")?.parse()?,
                "--year-days" => o.year_days = value("--year-days")?.parse()?,
                "--sizes" => {
                    o.convergence_sizes =
                        value("--sizes")?.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?;
                }
                other => bail!(
                    "unknown option {other:?}\nusage: cargo xtask bench [--only {}] [--quick] [--budget SECS] \
                     [--sync-n N] [--memory-n N] [--catchup-n N] [--sizes 10,50,100] [--year-days N] [--no-build]",
                    SECTIONS.join(",")
                ),
            }
        }
        Ok(o)
    }
}

/// A baseline measured in the same run.
#[derive(Clone, Debug)]
pub(crate) struct Baseline {
    pub value: f64,
    pub unit: String,
    pub what: String,
}

/// One printed figure.
#[derive(Clone, Debug)]
pub(crate) struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline: Option<Baseline>,
    /// How many times worse than the baseline (baseline/value for rates,
    /// value/baseline for times).
    pub ratio: Option<f64>,
    /// E.g. `target ≤ 4: missed`.
    pub target: Option<String>,
    pub info: String,
}

impl Figure {
    pub(crate) fn new(name: &str, value: f64, unit: &str) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline: None,
            ratio: None,
            target: None,
            info: String::new(),
        }
    }

    /// A rate against a baseline rate (ratio = baseline / value).
    pub(crate) fn vs_rate(mut self, value: f64, unit: &str, what: &str) -> Self {
        self.ratio = (self.value > 0.0).then(|| value / self.value);
        self.baseline = Some(Baseline { value, unit: unit.into(), what: what.into() });
        self
    }

    /// A time against a baseline time (ratio = value / baseline).
    pub(crate) fn vs_time(mut self, value: f64, unit: &str, what: &str) -> Self {
        self.ratio = (value > 0.0).then(|| self.value / value);
        self.baseline = Some(Baseline { value, unit: unit.into(), what: what.into() });
        self
    }

    /// Checks the ratio against a maximum.
    pub(crate) fn target_ratio(mut self, max: f64) -> Self {
        if let Some(r) = self.ratio {
            let verdict = if r <= max { "met" } else { "missed" };
            self.target = Some(format!("target ≤ {max}: {verdict}"));
        }
        self
    }

    pub(crate) fn info(mut self, info: impl Into<String>) -> Self {
        self.info = info.into();
        self
    }

    fn line(&self) -> String {
        let mut s = format!("{}: {} {}", self.name, num(self.value), self.unit);
        match &self.baseline {
            Some(b) => {
                s.push_str(&format!(" (baseline {} {} {}", num(b.value), b.unit, b.what));
                if let Some(r) = self.ratio {
                    s.push_str(&format!(", ratio {r:.2}"));
                }
                if let Some(t) = &self.target {
                    s.push_str(&format!("; {t}"));
                }
                s.push(')');
            }
            None => s.push_str(" (baseline n/a)"),
        }
        if !self.info.is_empty() {
            s.push_str(&format!(" — {}", self.info));
        }
        s
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline.as_ref().map(|b| json!({"value": b.value, "unit": b.unit, "what": b.what})),
            "ratio": self.ratio,
            "target": self.target,
            "info": self.info,
            "line": self.line(),
        })
    }
}

/// A number for humans: thousands separators for big ones, 3 significant digits for small.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() >= 1000.0 {
        let n = v.round() as i64;
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// State shared by the sections.
pub(crate) struct Ctx {
    pub opts: Opts,
    pub server: PathBuf,
    pub harness: PathBuf,
    started: Instant,
    figures: Vec<Figure>,
    details: Map<String, Value>,
    json_path: PathBuf,
    /// End-to-end sync rate measured by `sync` (changes/s), for planning `memory`.
    pub sync_rate: Option<f64>,
    /// Batch-API load rate measured by `sync` (ops/s), for planning `memory`.
    pub load_rate: Option<f64>,
    /// Bare-SQLite rows/s at 100 rows per transaction (measured once, reused).
    baseline_100: Option<f64>,
    /// `/proc/loadavg` when the measurements started (other work on the machine skews them).
    load_at_start: String,
}

/// `/proc/loadavg`'s three load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Ctx {
    /// Time left of the budget.
    pub(crate) fn remaining(&self) -> Duration {
        self.opts.budget.saturating_sub(self.started.elapsed())
    }

    /// Seconds since the measurements started.
    pub(crate) fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records and prints a figure, and rewrites the JSON file.
    pub(crate) fn push(&mut self, f: Figure) {
        println!("{}", f.line());
        self.figures.push(f);
        self.save();
    }

    /// Records raw details of a section.
    pub(crate) fn detail(&mut self, section: &str, v: Value) {
        self.details.insert(section.into(), v);
        self.save();
    }

    /// Bare SQLite rows/s, 100 single-row INSERTs per transaction, for 100,000 bench rows.
    pub(crate) fn baseline_100(&mut self) -> Result<f64> {
        if let Some(r) = self.baseline_100 {
            return Ok(r);
        }
        let rows = data::rows(0..self.opts.sync_n.max(100_000));
        let r = baseline::insert_rate(&rows, 100)?;
        self.baseline_100 = Some(r);
        Ok(r)
    }

    fn document(&self, done: bool) -> Value {
        json!({
            "load_average_at_start": self.load_at_start,
            "load_average_now": load_average(),
            "complete": done,
            "elapsed_s": self.elapsed(),
            "budget_s": self.opts.budget.as_secs(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "sections": self.opts.only,
            "figures": self.figures.iter().map(Figure::json).collect::<Vec<_>>(),
            "details": self.details,
        })
    }

    fn save(&self) {
        let text = serde_json::to_string_pretty(&self.document(false)).unwrap_or_default();
        if let Err(e) = std::fs::write(&self.json_path, text) {
            eprintln!("bench: cannot write {}: {e}", self.json_path.display());
        }
    }
}

/// The workspace target dir, honouring `CARGO_TARGET_DIR`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root.join(d)
            }
        }
        _ => root.join("target"),
    }
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    let target = target_dir(root);
    let release = target.join("release");
    if !opts.no_build {
        let t = Instant::now();
        crate::run(crate::cargo().args([
            "build",
            "--release",
            "--bins",
            "-p",
            "terminal-server",
            "-p",
            "tillmesh-tests",
            "-p",
            "xtask",
        ]))?;
        eprintln!("bench: release build took {:.0?}", t.elapsed());
        if cfg!(debug_assertions) {
            // Re-run from the release build: optimised load generators and baseline.
            let exe = release.join("xtask");
            eprintln!("bench: continuing in {}", exe.display());
            let status = Command::new(&exe)
                .arg("bench")
                .args(args)
                .arg("--no-build")
                .env("CARGO_TARGET_DIR", &target)
                .status()
                .with_context(|| format!("starting {}", exe.display()))?;
            if !status.success() {
                bail!("bench failed ({status})");
            }
            return Ok(());
        }
    } else if cfg!(debug_assertions) {
        eprintln!("bench: warning: this xtask is a debug build; figures of the load generators and the SQLite baseline are pessimistic");
    }
    let server = release.join("terminal-server");
    let harness = release.join("tillmesh-bench-harness");
    for bin in [&server, &harness] {
        if !bin.exists() {
            bail!("{} is missing: run `cargo xtask bench` without --no-build", bin.display());
        }
    }
    let mut ctx = Ctx {
        opts,
        server,
        harness,
        started: Instant::now(),
        figures: Vec::new(),
        details: Map::new(),
        json_path: target.join("bench.json"),
        sync_rate: None,
        load_rate: None,
        baseline_100: None,
        load_at_start: load_average(),
    };
    eprintln!(
        "bench: sections {}; budget {} s; POS documents of ~{} bytes; load average {}",
        ctx.opts.only.join(","),
        ctx.opts.budget.as_secs(),
        data::mean_doc_bytes(),
        ctx.load_at_start
    );
    let mut failures = Vec::new();
    for section in SECTIONS {
        if !ctx.opts.only.iter().any(|s| s == section) {
            continue;
        }
        let t = Instant::now();
        eprintln!("\n== bench {section} (at {:.0} s)", ctx.elapsed());
        let r = match section {
            "sync" => sync::run(&mut ctx),
            "local" => local::run(&mut ctx),
            "convergence" => harness::convergence(&mut ctx),
            "catchup" => harness::catchup(&mut ctx),
            "memory" => memory::run(&mut ctx),
            "year" => year::run(&mut ctx),
            _ => Ok(()),
        };
        eprintln!("== bench {section} took {:.1} s", t.elapsed().as_secs_f64());
        if let Err(e) = r {
            eprintln!("bench {section} FAILED: {e:#}");
            failures.push(format!("{section}: {e:#}"));
            ctx.detail(&format!("{section}_error"), json!(format!("{e:#}")));
        }
    }
    let total = ctx.elapsed();
    let mut doc = ctx.document(failures.is_empty());
    doc["total_s"] = json!(total);
    std::fs::write(&ctx.json_path, serde_json::to_string_pretty(&doc)?)?;
    println!(
        "\n== figures ({} in {total:.0} s; budget {} s; load average at start {}, at end {})",
        ctx.figures.len(),
        ctx.opts.budget.as_secs(),
        ctx.load_at_start,
        load_average()
    );
    for f in &ctx.figures {
        println!("{}", f.line());
    }
    println!("(JSON: {})", ctx.json_path.display());
    if total > ctx.opts.budget.as_secs_f64() {
        eprintln!("bench: over budget: {total:.0} s > {} s", ctx.opts.budget.as_secs());
    }
    if !failures.is_empty() {
        bail!("{} section(s) failed: {}", failures.len(), failures.join("; "));
    }
    Ok(())
}
