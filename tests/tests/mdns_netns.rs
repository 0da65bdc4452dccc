//! Issue 5 end to end: real `terminal-server` processes, each in its own network
//! namespace on a bridged virtual LAN, finding each other with real mDNS (restricted to
//! their veth), syncing over the discovered addresses, and tracking each other's
//! liveness (SIGKILL → offline by silence; SIGTERM → offline at once through the mDNS
//! goodbye; restart → online with the same device id). A terminal of another store on
//! the same LAN is listed untrusted and never synced with.
//!
//! Needs root and iproute2 (fails loudly otherwise) and the built binary:
//! `cargo build -p terminal-server && cargo test -p tillmesh-tests --test mdns_netns`.
//! `TEST_LOG=1` echoes the terminals' logs.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tillmesh_tests::netns::{poll, wait_event, NetnsRig, NsTerminal, NsTerminalSpec, PORT};

/// Found/listed deadline (issue 5: within 10 s).
const FIND: Duration = Duration::from_secs(10);
/// `--offline-after 3` + `--heartbeat-interval 1` + slack.
const OFFLINE: Duration = Duration::from_secs(8);

fn store_key(which: &str) -> String {
    format!("netns-{which}-store-key-{}-0123456789", std::process::id())
}

fn start(rig: &mut NetnsRig, host: u8, name: &str, key: &str) -> NsTerminal {
    let h = rig.add_host(host);
    // The test process calls the admin API over the rig's veth: another machine.
    let extra_args = vec!["--remote-admin".to_string()];
    NsTerminal::start(NsTerminalSpec { host: h, name: name.into(), store_key: key.into(), extra_args })
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Logs of every terminal, for failure messages.
fn logs(ts: &[&NsTerminal]) -> String {
    ts.iter().map(|t| t.log_tail(60)).collect::<Vec<_>>().join("\n")
}

/// Unwraps with the terminals' logs on failure.
trait OrLogs<T> {
    fn or_logs(self, ts: &[&NsTerminal]) -> T;
}

impl<T> OrLogs<T> for Result<T> {
    fn or_logs(self, ts: &[&NsTerminal]) -> T {
        self.unwrap_or_else(|e| panic!("{e:#}\n{}", logs(ts)))
    }
}

/// `observer` lists `peer` as found by mDNS, at its namespace address and port 7700,
/// with the given trust and status. Returns the entry.
fn listed(
    observer: &NsTerminal,
    peer: &NsTerminal,
    peer_id: &str,
    trusted: bool,
    status: &str,
) -> Result<Option<Value>> {
    let Some(d) = observer.device(peer_id)? else {
        return Ok(None);
    };
    let want_addr = peer.host().ip.to_string();
    let ok = d["source"] == "mdns"
        && d["trusted"] == trusted
        && d["status"] == status
        && d["address"] == want_addr.as_str()
        && d["port"] == PORT;
    Ok(ok.then_some(d))
}

/// `t` lists itself with `source:"self"` at its own namespace address.
fn lists_itself(t: &NsTerminal, id: &str) -> Result<Option<Value>> {
    let Some(d) = t.device(id)? else {
        return Ok(None);
    };
    let ok = d["source"] == "self"
        && d["address"] == t.host().ip.to_string().as_str()
        && d["port"] == PORT
        && d["status"] == "online"
        && d["trusted"] == true;
    Ok(ok.then_some(d))
}

fn put(t: &NsTerminal, path: &str, fields: Value) -> Result<Value> {
    t.ok("PUT", &format!("/api/entities/{path}"), Some(&json!({ "fields": fields })))
}

fn same_digest(a: &NsTerminal, b: &NsTerminal) -> Result<Option<()>> {
    let (da, db) = (a.digest()?, b.digest()?);
    Ok((da == db && da["entities"].as_u64() > Some(0)).then_some(()))
}

#[test]
fn terminals_find_each_other_sync_and_track_liveness_over_real_mdns() {
    let started = Instant::now();
    let mut rig = NetnsRig::new('a');
    let key = store_key("a");
    let t1 = start(&mut rig, 1, "till-1", &key);
    let mut t2 = start(&mut rig, 2, "till-2", &key);
    let (id1, id2) = (t1.device_id().or_logs(&[&t1]), t2.device_id().or_logs(&[&t2]));
    let events = t1.subscribe_events().or_logs(&[&t1]);
    eprintln!("rig and two terminals up in {:?}", started.elapsed());

    // 2. Each lists the other (mDNS, trusted, online, the peer's LAN address) and itself.
    let (_, took) = poll("t1 and t2 list each other", FIND, || {
        let a = listed(&t1, &t2, &id2, true, "online")?;
        let b = listed(&t2, &t1, &id1, true, "online")?;
        Ok(a.zip(b))
    })
    .or_logs(&[&t1, &t2]);
    eprintln!("t1 and t2 found each other {took:?} after start");
    for (t, id) in [(&t1, &id1), (&t2, &id2)] {
        let me = lists_itself(t, id).or_logs(&[t]);
        assert!(me.is_some(), "{} does not list itself with its LAN address {}: {:?}", t.url, t.host().ip, t.devices());
    }
    for t in [&t1, &t2] {
        for d in t.devices().or_logs(&[t]) {
            let addr = d["address"].as_str().unwrap_or_default();
            assert!(rig.in_subnet(addr), "{} lists a device outside the LAN (loopback?): {d}", t.url);
        }
    }

    // 3. Data flows over the discovered addresses by background sync alone.
    put(&t1, "product/tea", json!({"name": "Tea", "price": 250})).or_logs(&[&t1]);
    let (_, took) = poll("t2 has t1's product (equal digests)", FIND, || same_digest(&t1, &t2)).or_logs(&[&t1, &t2]);
    let got = t2.ok("GET", "/api/entities/product/tea", None).or_logs(&[&t2]);
    assert_eq!(got["fields"], json!({"name": "Tea", "price": 250}));
    eprintln!("background sync t1 → t2 took {took:?}");

    // 4. A late joiner finds both (and is found) within a few seconds, and catches up.
    let mut t3 = start(&mut rig, 3, "till-3", &key);
    let id3 = t3.device_id().or_logs(&[&t3]);
    let (_, took) = poll("t3 and the others list each other", Duration::from_secs(5), || {
        let all = [
            listed(&t3, &t1, &id1, true, "online")?,
            listed(&t3, &t2, &id2, true, "online")?,
            listed(&t1, &t3, &id3, true, "online")?,
            listed(&t2, &t3, &id3, true, "online")?,
        ];
        Ok(all.iter().all(Option::is_some).then_some(()))
    })
    .or_logs(&[&t1, &t2, &t3]);
    eprintln!("late joiner t3 found and listed {took:?} after start");
    assert!(lists_itself(&t3, &id3).or_logs(&[&t3]).is_some());
    poll("t3 caught up with t1", FIND, || same_digest(&t1, &t3)).or_logs(&[&t1, &t3]);

    // 5. SIGKILL (no goodbye): offline by silence, with a device_offline event.
    let killed = Instant::now();
    t2.kill9();
    let (_, took) =
        poll("t1 lists t2 offline", OFFLINE, || Ok(t1.device(&id2)?.filter(|d| d["status"] == "offline").map(|_| ())))
            .or_logs(&[&t1]);
    eprintln!("t2 offline on t1 {took:?} after SIGKILL");
    let (ev, _) = wait_event(&events, "device_offline", &id2, Duration::from_secs(2)).or_logs(&[&t1]);
    eprintln!("device_offline event {:?} after SIGKILL: {ev}", killed.elapsed());
    // Restarted on the same data dir: online again, same device id.
    t2.restart().or_logs(&[&t2]);
    assert_eq!(t2.device_id().or_logs(&[&t2]), id2, "the device id must survive a restart");
    let (_, took) = poll("t1 lists the restarted t2 online", FIND, || {
        let a = listed(&t1, &t2, &id2, true, "online")?;
        let b = t2.device(&id1)?.filter(|d| d["status"] == "online");
        Ok(a.zip(b))
    })
    .or_logs(&[&t1, &t2]);
    eprintln!("restarted t2 online again on t1 {took:?} after restart");
    wait_event(&events, "device_online", &id2, Duration::from_secs(2)).or_logs(&[&t1]);
    let ids: Vec<Value> = t1.devices().or_logs(&[&t1]).iter().map(|d| d["device_id"].clone()).collect();
    assert_eq!(ids.len(), 3, "no duplicate entry after the restart: {ids:?}");

    // 6. SIGTERM: the goodbye withdraws t3 at once (well before the 3 s silence limit).
    let terminated = Instant::now();
    let pid3 = t3.pid();
    let code = t3.terminate().or_logs(&[&t3]);
    assert_eq!(code, Some(0), "t3 (pid {pid3:?}) exit code after SIGTERM");
    let (_, took) = poll("t1 and t2 list t3 offline", OFFLINE, || {
        let a = t1.device(&id3)?.filter(|d| d["status"] == "offline");
        let b = t2.device(&id3)?.filter(|d| d["status"] == "offline");
        Ok(a.zip(b))
    })
    .or_logs(&[&t1, &t2, &t3]);
    let since_sigterm = terminated.elapsed();
    eprintln!("t3 offline on t1 and t2 {since_sigterm:?} after SIGTERM (poll {took:?})");
    wait_event(&events, "device_offline", &id3, Duration::from_secs(1)).or_logs(&[&t1]);
    let withdrawn = t1.log_tail(100_000);
    assert!(
        withdrawn.lines().any(|l| l.contains("withdrew its mDNS advertisement") && l.contains(&id3)),
        "t1 went offline for t3 by silence, not through its goodbye (mDNS Lost)\n{}",
        t1.log_tail(80)
    );
    assert!(
        since_sigterm < Duration::from_millis(2500),
        "t3 said goodbye but went offline only after {since_sigterm:?}, i.e. by silence\n{}",
        logs(&[&t1])
    );
    // The others are unaffected.
    assert!(listed(&t1, &t2, &id2, true, "online").or_logs(&[&t1]).is_some());

    eprintln!("test took {:?}", started.elapsed());
}

#[test]
fn a_terminal_of_another_store_is_listed_untrusted_and_never_synced_with() {
    let started = Instant::now();
    let mut rig = NetnsRig::new('b');
    let (ours, theirs) = (store_key("ours"), store_key("theirs"));
    let t1 = start(&mut rig, 1, "till-1", &ours);
    let t2 = start(&mut rig, 2, "till-2", &ours);
    let f3 = start(&mut rig, 3, "other-shop", &theirs);
    let all = [&t1, &t2, &f3];
    let (id1, id2, id3) = (t1.device_id().or_logs(&all), t2.device_id().or_logs(&all), f3.device_id().or_logs(&all));
    put(&t1, "sale/s1", json!({"total": 100})).or_logs(&all);
    put(&f3, "sale/foreign", json!({"total": 999})).or_logs(&all);

    let (_, took) =
        poll("each side lists the other store's terminal as untrusted; t1 and t2 trust each other", FIND, || {
            let all = [
                listed(&t1, &f3, &id3, false, "online")?,
                listed(&t2, &f3, &id3, false, "online")?,
                listed(&f3, &t1, &id1, false, "online")?,
                listed(&f3, &t2, &id2, false, "online")?,
                listed(&t1, &t2, &id2, true, "online")?,
            ];
            Ok(all.iter().all(Option::is_some).then_some(()))
        })
        .or_logs(&all);
    eprintln!("all listed {took:?} after start");
    // Our store's pair syncs (so sync works on this LAN) …
    poll("t2 has t1's sale", FIND, || same_digest(&t1, &t2)).or_logs(&all);
    // … and keeps doing so for a few more rounds without touching the other store.
    std::thread::sleep(Duration::from_secs(3));
    let report = t1.ok("POST", "/api/sync/now", None).or_logs(&all);
    let peers = report["peers"].as_array().cloned().unwrap_or_default();
    assert!(peers.iter().all(|p| p["device_id"] != id3.as_str()), "t1 synced with another store's terminal: {report}");
    for t in [&t1, &t2] {
        let (status, body) = t.call("GET", "/api/entities/sale/foreign", None).or_logs(&all);
        assert_eq!(status, 404, "the other store's sale reached {}: {body}", t.url);
        let d = t.device(&id3).or_logs(&all);
        assert!(d.as_ref().is_some_and(|d| d["trusted"] == false), "{d:?}");
    }
    let (status, body) = f3.call("GET", "/api/entities/sale/s1", None).or_logs(&all);
    assert_eq!(status, 404, "our sale reached the other store: {body}");
    assert_ne!(t1.digest().or_logs(&all)["digest"], f3.digest().or_logs(&all)["digest"]);
    eprintln!("test took {:?}", started.elapsed());
}

/// From another machine (the test process, over the rig's veth) the admin token is
/// refused unless the terminal was started with `--remote-admin`; the app token and
/// the health check work from anywhere.
#[test]
fn the_admin_token_is_refused_from_another_machine_without_remote_admin() {
    let mut rig = NetnsRig::new('r');
    let h = rig.add_host(1);
    let t = NsTerminal::start(NsTerminalSpec {
        host: h,
        name: "till-r".into(),
        store_key: store_key("r"),
        extra_args: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (status, body) = t.call("GET", "/api/network/devices", None).or_logs(&[&t]);
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("remote_admin_disabled")), "{body}");
    let (status, _) = t.call("GET", "/api/health", None).or_logs(&[&t]);
    assert_eq!(status, 200);
    let app = std::fs::read_to_string(t.data_dir().join("app-token")).expect("app token").trim().to_string();
    let client = reqwest::blocking::Client::builder().no_proxy().build().expect("client");
    let put = json!({"fields": {"name": "Tea"}});
    let (status, body) =
        tillmesh_tests::process::token_call(&client, &t.url, &app, "PUT", "/api/entities/product/p1", Some(&put))
            .or_logs(&[&t]);
    assert_eq!(status, 200, "the app token works from the till app's device: {body}");
}
