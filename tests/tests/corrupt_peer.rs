//! A peer whose log holds a corrupted change (bit rot on its disk): the batch carrying
//! it is rejected whole, nothing of it is applied, the cursor does not move, and the
//! error shows in `/api/sync/progress`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tillmesh_tests::TerminalProcess;

/// Changes one stored change's content without fixing its checksum (python3's sqlite3
/// module stands in for a damaged disk).
fn corrupt_change(db: &std::path::Path, seq_pos: u32) -> Result<()> {
    let script = format!(
        "import sqlite3; c = sqlite3.connect({db:?}); \
         n = c.execute(\"UPDATE change_log SET record = replace(record, 'item-{seq_pos}', 'item-XX') WHERE pos = {pos}\").rowcount; \
         c.commit(); print(n)",
        db = db.display().to_string(),
        pos = seq_pos + 1,
    );
    let out = Command::new("python3").args(["-c", &script]).output()?;
    if String::from_utf8_lossy(&out.stdout).trim() != "1" {
        bail!("could not corrupt the change: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[test]
fn a_batch_with_a_bad_checksum_is_rejected_whole() -> Result<()> {
    let mut a = TerminalProcess::start(&[])?;
    let ops: Vec<Value> = (0..5)
        .map(
            |i| json!({"op": "put", "type": "product", "id": format!("p{i}"), "fields": {"name": format!("item-{i}")}}),
        )
        .collect();
    a.ok("POST", "/api/entities/batch", Some(&json!({ "ops": ops })))?;
    a.terminate()?;
    corrupt_change(&a.data_dir.join("tillmesh.db"), 3)?;
    let a = TerminalProcess::start_in(&a.data_dir.clone(), &[])?;

    let b = TerminalProcess::start(&[])?;
    let before = b.digest()?;
    b.pair(&a)?;
    let r = b.sync_now()?;
    assert!(r["peers"][0]["error"].as_str().unwrap().contains("checksum"), "{r}");
    assert_eq!(r["peers"][0]["pulled"], 0);
    assert_eq!(b.digest()?, before, "nothing of the batch was applied, not even the good changes");
    let progress = b.ok("GET", "/api/sync/progress", None)?;
    let peer = &progress["peers"][0];
    assert!(peer["last_error"].as_str().unwrap().contains("checksum"), "{progress}");
    assert!(peer["last_sync"].is_null(), "a rejected batch is not a successful sync");
    // Retrying keeps refusing rather than skipping the bad change.
    let again = b.sync_now()?;
    assert!(again["peers"][0]["error"].as_str().unwrap().contains("checksum"), "{again}");
    assert_eq!(b.digest()?, before);
    Ok(())
}
