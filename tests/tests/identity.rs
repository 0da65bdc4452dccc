//! Restored and cloned data dirs: a terminal rolled back to an old backup, or two
//! tills booted from one image, must never make peers drop or mis-attribute changes.
//! Each run writes under a fresh incarnation of its device id, so (writer, sequence)
//! pairs are never reused.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Result};
use serde_json::json;
use tillmesh_tests::TerminalProcess;

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(to);
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    ensure!(status.success(), "cp -a failed");
    Ok(())
}

fn sale(t: &TerminalProcess, id: &str) -> Result<()> {
    t.ok("PUT", &format!("/api/entities/sale/{id}"), Some(&json!({"fields": {"total": 100}})))?;
    Ok(())
}

fn sales(t: &TerminalProcess) -> Result<Vec<String>> {
    let page = t.ok("GET", "/api/entities/sale?limit=100", None)?;
    Ok(page["entities"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect())
}

#[test]
fn a_terminal_restored_from_an_old_backup_loses_none_of_its_new_sales() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let mut b = TerminalProcess::start(&[])?;
    a.pair(&b)?;
    sale(&b, "s1")?;
    sale(&b, "s2")?;
    a.sync_now()?;
    b.terminate()?;
    let backup = tempfile::tempdir()?;
    let saved = backup.path().join("b");
    copy_dir(&b.data_dir, &saved)?;

    let b = TerminalProcess::start_in(&b.data_dir.clone(), &[])?;
    a.pair(&b)?; // restarted on a new port
    sale(&b, "s3")?;
    sale(&b, "s4")?;
    a.sync_now()?;
    let mut b = b;
    b.terminate()?;

    // The till is restored from the backup: it knows s1 and s2 only.
    copy_dir(&saved, &b.data_dir)?;
    let b = TerminalProcess::start_in(&b.data_dir.clone(), &[])?;
    assert_eq!(sales(&b)?, vec!["s1", "s2"]);
    a.pair(&b)?;
    sale(&b, "s5")?;
    sale(&b, "s6")?;
    a.sync_now()?;
    assert_eq!(sales(&a)?, vec!["s1", "s2", "s3", "s4", "s5", "s6"], "the restored till's new sales reach A");
    b.pair(&a)?;
    b.sync_now()?;
    assert_eq!(sales(&b)?, vec!["s1", "s2", "s3", "s4", "s5", "s6"], "the sales lost with the rollback come back");
    assert_eq!(a.digest()?, b.digest()?);
    Ok(())
}

#[test]
fn two_tills_booted_from_one_image_keep_both_their_sales() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let mut b = TerminalProcess::start(&[])?;
    sale(&b, "base")?;
    b.terminate()?;
    let image = tempfile::tempdir()?;
    let clone_dir = image.path().join("clone");
    copy_dir(&b.data_dir, &clone_dir)?;
    let b = TerminalProcess::start_in(&b.data_dir.clone(), &[])?;
    let c = TerminalProcess::start_in(&clone_dir, &[])?;
    // Same history, same next sequence number: each writes its own sale.
    sale(&b, "from-b")?;
    sale(&c, "from-c")?;
    b.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"price": 1}})))?;
    c.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"price": 2}})))?;
    // A meets one clone, then the other (they share a device id, so one registry entry).
    a.pair(&b)?;
    a.sync_now()?;
    a.pair(&c)?;
    a.sync_now()?;
    assert_eq!(sales(&a)?, vec!["base", "from-b", "from-c"]);
    // Their concurrent edits of one field are a conflict, not a silent overwrite.
    let conflicts = a.ok("GET", "/api/sync/conflicts", None)?;
    assert_eq!(conflicts["conflicts"].as_array().unwrap().len(), 1, "{conflicts}");
    Ok(())
}
