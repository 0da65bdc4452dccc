//! Membership that spreads, between real terminals on loopback with mDNS off: pairing
//! on either side makes both sides sync, and every member learns the others from any
//! member it talks to, so one pairing joins the whole store.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use tillmesh_tests::process::wait_until;
use tillmesh_tests::TerminalProcess;

fn sale(t: &TerminalProcess, id: &str) -> Result<()> {
    t.ok("PUT", &format!("/api/entities/sale/{id}"), Some(&json!({"fields": {"total": 1}})))?;
    Ok(())
}

fn sales(t: &TerminalProcess) -> Result<usize> {
    Ok(t.ok("GET", "/api/entities/sale?limit=100", None)?["entities"].as_array().unwrap().len())
}

fn trusted_others(t: &TerminalProcess) -> Result<usize> {
    let devices = t.ok("GET", "/api/network/devices", None)?;
    Ok(devices["devices"].as_array().unwrap().iter().filter(|d| d["trusted"] == true && d["source"] != "self").count())
}

#[test]
fn pairing_on_one_side_makes_both_sides_sync() -> Result<()> {
    let a = TerminalProcess::start(&["--sync-interval", "3600"])?;
    let b = TerminalProcess::start(&["--sync-interval", "3600"])?;
    sale(&a, "from-a")?;
    sale(&b, "from-b")?;
    assert_eq!(trusted_others(&b)?, 0);
    a.pair(&b)?; // only A knows B
    a.sync_now()?;
    // B learned A from A's pull (and checked it with its own handshake).
    wait_until("B to trust A", Duration::from_secs(10), || Ok(trusted_others(&b)? == 1))?;
    let devices = b.ok("GET", "/api/network/devices", None)?;
    let learned = devices["devices"].as_array().unwrap().iter().find(|d| d["source"] != "self").unwrap().clone();
    assert_eq!(learned["source"], "peer", "learned from A's pull, not paired by hand: {learned}");
    b.sync_now()?;
    assert_eq!((sales(&a)?, sales(&b)?), (2, 2), "each has the other's sale");
    assert_eq!(a.digest()?, b.digest()?);
    Ok(())
}

#[test]
fn five_terminals_paired_in_a_chain_all_sync_with_each_other() -> Result<()> {
    let t: Vec<TerminalProcess> =
        (0..5).map(|_| TerminalProcess::start(&["--sync-interval", "1"])).collect::<Result<_>>()?;
    // Each pairs once, with the one before it: t0 - t1 - t2 - t3 - t4.
    for i in 1..5 {
        t[i].pair(&t[i - 1])?;
    }
    for (i, term) in t.iter().enumerate() {
        sale(term, &format!("s{i}"))?;
    }
    wait_until("every terminal to trust every other", Duration::from_secs(60), || {
        t.iter().try_fold(true, |all, x| Ok(all && trusted_others(x)? == 4))
    })?;
    wait_until("every sale everywhere", Duration::from_secs(60), || {
        t.iter().try_fold(true, |all, x| Ok(all && sales(x)? == 5))
    })?;
    let d0 = t[0].digest()?;
    wait_until("equal digests", Duration::from_secs(30), || {
        t.iter().try_fold(true, |all, x| Ok(all && x.digest()? == d0))
    })?;
    Ok(())
}
