//! A terminal's writer: kept across restarts and kill -9 (so clocks stay small), and
//! replaced when continuity cannot be proved — a data dir restored from an old backup,
//! two tills booted from one image, a rollback only a peer can see — so peers never
//! drop or mis-attribute changes.
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

fn version_entries(t: &TerminalProcess, path: &str) -> Result<usize> {
    Ok(t.ok("GET", path, None)?["version"].as_object().unwrap().len())
}

#[test]
fn the_writer_is_kept_across_restarts_and_kill_9() -> Result<()> {
    let mut t = TerminalProcess::start(&[])?;
    t.ok("POST", "/api/entities/product/p1/counters/stock", Some(&json!({"delta": 10})))?;
    for round in 0..4 {
        if round % 2 == 0 {
            t.terminate()?;
        } else {
            t.kill9();
        }
        t.restart()?;
        t.ok("POST", "/api/entities/product/p1/counters/stock", Some(&json!({"delta": -1})))?;
    }
    let p1 = t.ok("GET", "/api/entities/product/p1", None)?;
    assert_eq!(p1["fields"]["stock"], 6);
    assert_eq!(version_entries(&t, "/api/entities/product/p1")?, 1, "one writer after five runs: {p1}");
    Ok(())
}

/// Copies the database and its WAL out of `dir`.
fn snapshot(dir: &Path, to: &Path) -> Result<()> {
    for f in ["tillmesh.db", "tillmesh.db-wal"] {
        if dir.join(f).exists() {
            std::fs::copy(dir.join(f), to.join(f))?;
        }
    }
    Ok(())
}

/// Writes a [`snapshot`] back over `dir`'s files in place (the database keeps its
/// inode, so the marker cannot tell) and drops what came after: what a disk that lost
/// acknowledged writes would leave.
fn roll_back_in_place(from: &Path, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_file(dir.join("tillmesh.db-shm"));
    for f in ["tillmesh.db", "tillmesh.db-wal"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), dir.join(f))?;
        } else {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    Ok(())
}

#[test]
fn a_rollback_that_a_peer_saw_retires_the_writer_and_loses_nothing() -> Result<()> {
    rollback_seen_by_a_peer(false)
}

#[test]
fn a_rollback_found_by_pulling_a_peer_retires_the_writer_and_loses_nothing() -> Result<()> {
    rollback_seen_by_a_peer(true)
}

/// A's database goes back (over the same file) after B pulled its last writes; then A
/// learns it from B — B pulling from A (`a_pulls_first` false: B's pull names more of A's
/// writer than A's log holds) or A pulling from B (a record of A's writer beyond its log)
/// — and only then writes again. Nothing is lost on either side.
fn rollback_seen_by_a_peer(a_pulls_first: bool) -> Result<()> {
    let mut a = TerminalProcess::start(&[])?;
    let b = TerminalProcess::start(&[])?;
    sale(&a, "s1")?;
    a.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"name": "Tea", "price": 1}})))?;
    a.terminate()?;
    let saved = tempfile::tempdir()?;
    snapshot(&a.data_dir, saved.path())?;

    a.restart()?;
    sale(&a, "s2")?;
    sale(&a, "s3")?;
    a.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"price": 2}})))?;
    b.pair(&a)?;
    b.sync_now()?;
    assert_eq!(sales(&b)?, vec!["s1", "s2", "s3"]);
    a.kill9();
    roll_back_in_place(saved.path(), &a.data_dir)?;

    // Same file, same machine: only B can tell that A's log lost s2, s3 and the price.
    a.restart()?;
    assert_eq!(sales(&a)?, vec!["s1"]);
    let writer_before = a.ok("GET", "/api/entities/sale/s1", None)?["version"].clone();
    if a_pulls_first {
        a.pair(&b)?;
        a.sync_now()?;
        b.pair(&a)?; // A restarted on a new port
    } else {
        b.pair(&a)?;
        b.sync_now()?;
        a.pair(&b)?;
    }
    sale(&a, "s4")?;
    a.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"name": "Green tea"}})))?;
    let s4_writer = a.ok("GET", "/api/entities/sale/s4", None)?["version"].clone();
    assert_ne!(
        s4_writer.as_object().unwrap().keys().collect::<Vec<_>>(),
        writer_before.as_object().unwrap().keys().collect::<Vec<_>>(),
        "s4 is written under a new writer"
    );
    b.sync_now()?;
    a.sync_now()?;
    let want = vec!["s1", "s2", "s3", "s4"];
    assert_eq!(sales(&b)?, want, "A's writes after the rollback reach B");
    assert_eq!(sales(&a)?, want, "what A lost comes back from B");
    for t in [&a, &b] {
        let p1 = t.ok("GET", "/api/entities/product/p1", None)?;
        assert_eq!(p1["fields"], json!({"name": "Green tea", "price": 2}), "neither edit was dropped: {p1}");
    }
    assert_eq!(a.digest()?, b.digest()?);
    Ok(())
}
