//! Project automation, so that "if `cargo xtask ci` passes locally, CI passes too".
//!
//! `ci` runs every check CI runs, in order; `tidy` checks the architecture
//! invariants of `docs/ARCHITECTURE.md` and file headers; `bench` and `fuzz` run the
//! long measurements that do not belong in the test suite.

mod bench;
mod fuzz;
mod fuzz_api;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(&root),
        Some("tidy") => tidy::run(&root),
        Some("bench") => bench::run(&root, &args[1..]),
        Some("fuzz-api") => fuzz_api::run(&root, &args[1..]),
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci | tidy | bench | fuzz [CASES] | fuzz-api [EXAMPLES]>");
            std::process::exit(2);
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command, echoing it, and fails if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("\n$ {}", render(cmd));
    let status = cmd.status().with_context(|| format!("could not start {}", render(cmd)))?;
    if !status.success() {
        bail!("command failed ({status}): {}", render(cmd));
    }
    Ok(())
}

fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn has_nextest() -> bool {
    cargo().args(["nextest", "--version"]).output().map(|o| o.status.success()).unwrap_or(false)
}

fn ci(root: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    run(cargo().args(["fmt", "--all", "--check"]))?;
    tidy::run(root)?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The end-to-end tests start the real binary; build it first so they find it.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    eprintln!(
        "\nproptest: every property suite runs 256 cases (ProptestConfig::with_cases(256)): clock laws, \
         entity join laws and convergence, counter sums, checksums, backoff delays (tillmesh-domain), \
         peer-decoder fuzzing (tests/security.rs)"
    );
    if has_nextest() {
        run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast", "--success-output", "never"]))?;
        // nextest does not run doctests.
        run(cargo().args(["test", "--workspace", "--doc"]))?;
    } else {
        eprintln!("cargo-nextest not found (install: cargo install cargo-nextest); falling back to cargo test");
        run(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    }
    eprintln!("\nxtask ci: all checks passed in {:.0?}", started.elapsed());
    Ok(())
}
