//! End-to-end sync between real `terminal-server` processes on loopback: merging,
//! conflicts and their resolution, counters, relay, resumability after SIGKILL, and
//! rejection of corrupted batches.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use tillmesh_tests::process::wait_until;
use tillmesh_tests::TerminalProcess;

fn pair_both(a: &TerminalProcess, b: &TerminalProcess) -> Result<()> {
    a.pair(b)?;
    b.pair(a)?;
    Ok(())
}

fn put(t: &TerminalProcess, path: &str, fields: Value) -> Result<Value> {
    t.ok("PUT", &format!("/api/entities/{path}"), Some(&json!({ "fields": fields })))
}

fn get(t: &TerminalProcess, path: &str) -> Result<Value> {
    t.ok("GET", &format!("/api/entities/{path}"), None)
}

fn sync_both(a: &TerminalProcess, b: &TerminalProcess) -> Result<()> {
    for r in [a.sync_now()?, b.sync_now()?] {
        for p in r["peers"].as_array().unwrap() {
            assert!(p["error"].is_null(), "sync error: {p}");
        }
    }
    Ok(())
}

#[test]
fn edits_of_different_fields_on_two_terminals_merge_without_conflict() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let b = TerminalProcess::start(&[])?;
    pair_both(&a, &b)?;
    put(&a, "product/p1", json!({"name": "Tea", "price": 100}))?;
    sync_both(&a, &b)?;
    put(&a, "product/p1", json!({"name": "Green tea"}))?;
    put(&b, "product/p1", json!({"price": 120}))?;
    sync_both(&a, &b)?;
    for t in [&a, &b] {
        let e = get(t, "product/p1")?;
        assert_eq!(e["fields"], json!({"name": "Green tea", "price": 120}));
        assert_eq!(e["conflicts"], json!([]));
    }
    assert_eq!(a.digest()?, b.digest()?);
    Ok(())
}

#[test]
fn a_same_field_conflict_is_listed_everywhere_and_resolved_once() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let b = TerminalProcess::start(&[])?;
    pair_both(&a, &b)?;
    put(&a, "product/p1", json!({"price": 100}))?;
    sync_both(&a, &b)?;
    put(&a, "product/p1", json!({"price": 110}))?;
    put(&b, "product/p1", json!({"price": 120}))?;
    sync_both(&a, &b)?;
    let ca = a.ok("GET", "/api/sync/conflicts", None)?;
    let cb = b.ok("GET", "/api/sync/conflicts", None)?;
    assert_eq!(ca["conflicts"].as_array().unwrap().len(), 1, "{ca}");
    assert_eq!(ca["conflicts"][0]["id"], cb["conflicts"][0]["id"], "same conflict id on both terminals");
    let mut values: Vec<i64> =
        ca["conflicts"][0]["values"].as_array().unwrap().iter().map(|v| v["value"].as_i64().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(values, vec![110, 120]);
    // Both show the same provisional value meanwhile.
    assert_eq!(get(&a, "product/p1")?["fields"]["price"], get(&b, "product/p1")?["fields"]["price"]);
    assert_eq!(a.digest()?["open_conflicts"], 1);

    // Resolving on B with a custom value closes it on both.
    let id = ca["conflicts"][0]["id"].as_str().unwrap().to_string();
    b.ok(
        "POST",
        "/api/sync/conflicts/resolve",
        Some(&json!({"conflict_id": id, "resolution": "custom", "value": 115})),
    )?;
    sync_both(&a, &b)?;
    for t in [&a, &b] {
        assert_eq!(t.ok("GET", "/api/sync/conflicts", None)?["conflicts"], json!([]));
        assert_eq!(get(t, "product/p1")?["fields"]["price"], 115);
    }
    assert_eq!(a.digest()?, b.digest()?);
    // Resolving again is a clear 404, not a 5xx.
    let (status, body) =
        a.call("POST", "/api/sync/conflicts/resolve", Some(&json!({"conflict_id": id, "resolution": "local"})))?;
    assert_eq!(status, 404, "{body}");
    Ok(())
}

#[test]
fn resolving_with_remote_keeps_the_other_terminals_value() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let b = TerminalProcess::start(&[])?;
    pair_both(&a, &b)?;
    put(&a, "setting/s1", json!({"tax": "a"}))?;
    put(&b, "setting/s1", json!({"tax": "b"}))?;
    sync_both(&a, &b)?;
    let c = a.ok("GET", "/api/sync/conflicts", None)?;
    let id = c["conflicts"][0]["id"].as_str().unwrap().to_string();
    let shown = get(&a, "setting/s1")?["fields"]["tax"].clone();
    let r = a.ok("POST", "/api/sync/conflicts/resolve", Some(&json!({"conflict_id": id, "resolution": "remote"})))?;
    assert_ne!(r["value"], shown, "remote picks the value not shown locally");
    sync_both(&a, &b)?;
    assert_eq!(get(&b, "setting/s1")?["fields"]["tax"], r["value"]);
    Ok(())
}

#[test]
fn offline_sales_on_two_terminals_both_count_against_stock() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let b = TerminalProcess::start(&[])?;
    pair_both(&a, &b)?;
    a.ok("POST", "/api/entities/product/p1/counters/stock", Some(&json!({"delta": 10})))?;
    sync_both(&a, &b)?;
    for _ in 0..3 {
        a.ok("POST", "/api/entities/product/p1/counters/stock", Some(&json!({"delta": -1})))?;
    }
    b.ok("POST", "/api/entities/product/p1/counters/stock", Some(&json!({"delta": -2})))?;
    sync_both(&a, &b)?;
    assert_eq!(get(&a, "product/p1")?["fields"]["stock"], 5);
    assert_eq!(get(&b, "product/p1")?["fields"]["stock"], 5);
    Ok(())
}

#[test]
fn a_change_made_on_a_reaches_c_through_b() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let b = TerminalProcess::start(&[])?;
    let c = TerminalProcess::start(&[])?;
    // A and C never talk: B pulls from A, C pulls from B.
    b.pair(&a)?;
    c.pair(&b)?;
    put(&a, "product/relay", json!({"name": "relayed"}))?;
    a.ok("DELETE", "/api/entities/product/relay", None)?;
    put(&a, "sale/s1", json!({"total": 3}))?;
    b.sync_now()?;
    c.sync_now()?;
    assert!(get(&c, "product/relay")?["deleted"].as_bool().unwrap());
    assert_eq!(get(&c, "sale/s1")?["fields"]["total"], 3);
    assert_eq!(a.digest()?, c.digest()?);
    // Nothing bounces back: a second round pulls nothing new.
    let again = c.sync_now()?;
    assert_eq!(again["peers"][0]["pulled"], 0);
    Ok(())
}

#[test]
fn a_sync_killed_half_way_resumes_without_loss_or_repeats() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let n = 20_000;
    for chunk in 0..2 {
        let ops: Vec<Value> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| {
                json!({"op": "put", "type": "product", "id": format!("p{i:05}"), "fields": {
                    "name": format!("item {i}"), "price": i, "tax": 20, "sku": format!("SKU-{i:08}"),
                    "category": "grocery", "unit": "piece", "active": true, "barcode": format!("{:013}", i * 7919)
                }})
            })
            .collect();
        a.ok("POST", "/api/entities/batch", Some(&json!({ "ops": ops })))?;
    }
    let mut b = TerminalProcess::start(&["--sync-interval", "1", "--sync-batch-size", "100"])?;
    let started = std::time::Instant::now();
    b.pair(&a)?;
    // Let the background sync get part-way, then cut the power.
    wait_until("part of the data to arrive", Duration::from_secs(60), || {
        Ok(b.digest()?["entities"].as_u64().unwrap_or(0) > 1000)
    })?;
    b.kill9();
    let dir = b.data_dir.clone();
    let args: Vec<String> = b.args.clone();
    let b2 = TerminalProcess::start_in(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let partial = b2.digest()?["entities"].as_u64().unwrap();
    assert!(partial < n, "the kill must interrupt the sync (had {partial})");
    b2.sync_now()?;
    assert_eq!(b2.digest()?, a.digest()?);
    let secs = started.elapsed().as_secs_f64();
    println!("{n} changes synced across a SIGKILL in {secs:.1} s ({:.0} changes/s, debug build)", n as f64 / secs);
    // Every change arrived exactly once: B's log holds exactly n changes from A.
    let p = b2.ok("GET", "/api/sync/progress", None)?;
    assert_eq!(p["peers"][0]["pending_changes"], 0, "{p}");
    let list = b2.ok("GET", "/api/entities/product?limit=1000", None)?;
    assert_eq!(list["entities"].as_array().unwrap().len(), 1000);
    Ok(())
}

#[test]
fn terminals_converge_in_any_pull_order() -> Result<()> {
    let t: Vec<TerminalProcess> = (0..3).map(|_| TerminalProcess::start(&[])).collect::<Result<_>>()?;
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                t[i].pair(&t[j])?;
            }
        }
    }
    for (i, term) in t.iter().enumerate() {
        for k in 0..20 {
            put(term, &format!("product/p{k}"), json!({ format!("f{i}"): k, "shared": i }))?;
        }
        term.ok("POST", "/api/entities/product/p0/counters/stock", Some(&json!({"delta": i as i64 + 1})))
            .map(|_| ())
            .or_else(|_| Ok::<(), anyhow::Error>(()))?;
    }
    for round in [[2, 0, 1], [1, 2, 0]] {
        for i in round {
            t[i].sync_now()?;
        }
    }
    let d0 = t[0].digest()?;
    assert_eq!(d0, t[1].digest()?);
    assert_eq!(d0, t[2].digest()?);
    assert_eq!(d0["open_conflicts"], 20, "each product's `shared` field was written concurrently");
    Ok(())
}

#[test]
fn a_newcomer_pulls_one_record_per_live_entity_through_a_relay_and_across_a_kill() -> Result<()> {
    let a = TerminalProcess::start(&[])?;
    let products = 200;
    let ops: Vec<Value> = (0..products)
        .map(|i| json!({"op": "put", "type": "product", "id": format!("p{i:03}"), "fields": {"name": format!("item {i}")}}))
        .collect();
    a.ok("POST", "/api/entities/batch", Some(&json!({ "ops": ops })))?;
    // Ten rounds of stock counts: 2,200 writes, 200 live entities.
    for round in 0..10 {
        let ops: Vec<Value> = (0..products)
            .map(|i| json!({"op": "counter", "type": "product", "id": format!("p{i:03}"), "field": "stock", "delta": round + 1}))
            .collect();
        a.ok("POST", "/api/entities/batch", Some(&json!({ "ops": ops })))?;
    }
    let b = TerminalProcess::start(&[])?;
    b.pair(&a)?;
    let r = b.sync_now()?;
    assert_eq!(r["peers"][0]["pulled"], products, "one record per product, not one per write: {r}");

    // C learns everything through B, in small batches, and loses power half-way.
    let mut c = TerminalProcess::start(&["--sync-interval", "1", "--sync-batch-size", "10"])?;
    c.pair(&b)?;
    wait_until("part of the data to arrive", Duration::from_secs(60), || {
        Ok(c.digest()?["entities"].as_u64().unwrap_or(0) >= 20)
    })?;
    c.kill9();
    let partial = c.digest();
    c.restart()?;
    assert!(partial.is_err(), "the terminal is down");
    let r = c.sync_now()?;
    assert!(r["peers"][0]["error"].is_null(), "{r}");
    let progress = c.ok("GET", "/api/sync/progress", None)?;
    assert_eq!(progress["peers"][0]["pending_changes"], 0, "{progress}");
    assert_eq!(c.digest()?, a.digest()?);
    assert_eq!(get(&c, "product/p007")?["fields"]["stock"], 55);
    Ok(())
}
