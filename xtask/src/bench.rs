//! `cargo xtask bench`: the benchmarks of issue 10 (not yet written).

use std::path::Path;

use anyhow::{bail, Result};

pub fn run(_root: &Path, _args: &[String]) -> Result<()> {
    bail!("cargo xtask bench is not implemented yet (issue 10)")
}
