//! `cargo xtask fuzz [CASES]`: the proptest fuzzers of the peer wire decoders
//! (`tests/tests/security.rs`, tests named `fuzz_*`) with many more cases than the
//! test suite runs (default 100,000 per property; the time is bounded by the count).

use std::path::Path;

use anyhow::{bail, Result};

pub fn run(_root: &Path, args: &[String]) -> Result<()> {
    let cases = args.first().map(String::as_str).unwrap_or("100000");
    if !matches!(cases.parse::<u32>(), Ok(n) if n > 0) {
        bail!("CASES must be a positive integer, got {cases:?}");
    }
    crate::run(crate::cargo().env("PROPTEST_CASES", cases).args([
        "test",
        "-p",
        "tillmesh-tests",
        "--test",
        "security",
        "--",
        "fuzz",
    ]))
}
