//! Real mDNS between network namespaces: terminals in their own namespaces, joined by
//! veth pairs to a bridge in a `hub` namespace, each running `tillmesh-mdns-probe`
//! restricted to its veth. Nothing is mocked and nothing touches the host's own
//! interfaces. Needs root and iproute2; fails loudly (never skips) without them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const PROBE: &str = env!("CARGO_BIN_EXE_tillmesh-mdns-probe");
/// How long a peer may take to be found, or lost after its goodbye.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- prerequisites

fn require_root_and_iproute2() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?");
    assert!(
        euid == "0",
        "the netns tests build network namespaces and must run as root (effective uid is \
         {euid}): run `sudo -E env PATH=$PATH cargo test -p tillmesh-discovery-mdns --test netns`"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.as_ref().is_ok_and(|o| o.status.success()),
        "the netns tests need the `ip` command: install iproute2 \
         (`apt-get install -y iproute2`); got {ip:?}"
    );
}

/// Runs `ip ARGS`, panicking with its stderr (and a hint) when it fails.
fn ip(args: &[&str]) {
    let out =
        Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}\n(these tests need root with CAP_SYS_ADMIN and CAP_NET_ADMIN; \
         in a container run it privileged)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Deletes namespaces left behind by earlier runs of these tests that were killed
/// (their names carry the pid of a process that no longer exists).
fn reap_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

// ---------------------------------------------------------------- the rig

/// Namespace names: `tmd<pid><test tag><role>`, unique per test process and test.
const NS_PREFIX: &str = "tmd";

/// A /24 in 10.201.0.0/16 for this process and test (namespaces already isolate
/// rigs from each other; distinct subnets keep failures readable).
fn subnet(offset: u8) -> Ipv4Addr {
    let base = 10 + (std::process::id() % 80) as u8 * 3;
    Ipv4Addr::new(10, 201, base + offset, 0)
}

fn host(net: Ipv4Addr, host: u8) -> String {
    let o = net.octets();
    format!("{}.{}.{}.{host}", o[0], o[1], o[2])
}

fn in_subnet(addr: &str, net: Ipv4Addr) -> bool {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.octets()[..3] == net.octets()[..3],
        _ => false,
    }
}

/// Network namespaces and the probes running in them. Dropping it (also while
/// unwinding from a failed assertion) kills the probes and deletes every namespace.
struct Rig {
    tag: char,
    namespaces: Vec<String>,
    probes: Vec<Probe>,
    events_tx: Sender<(String, Value)>,
    events: Events,
}

struct Probe {
    label: String,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Rig {
    fn new(tag: char) -> Self {
        require_root_and_iproute2();
        reap_stale_namespaces();
        let (events_tx, rx) = mpsc::channel();
        let mut rig = Self {
            tag,
            namespaces: Vec::new(),
            probes: Vec::new(),
            events_tx,
            events: Events { rx, seen: Vec::new() },
        };
        rig.add_namespace('h');
        rig
    }

    fn ns_name(&self, role: char) -> String {
        format!("{NS_PREFIX}{}{}{role}", std::process::id(), self.tag)
    }

    fn hub(&self) -> String {
        self.ns_name('h')
    }

    fn add_namespace(&mut self, role: char) -> String {
        let name = self.ns_name(role);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        name
    }

    /// A bridge `br<n>` in the hub (one LAN).
    fn add_lan(&self, n: u8) {
        let (hub, br) = (self.hub(), format!("br{n}"));
        ip(&["-n", &hub, "link", "add", &br, "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", &br, "up"]);
    }

    /// A terminal namespace (role `t`), with loopback up.
    fn add_terminal(&mut self, role: char) -> String {
        let ns = self.add_namespace(role);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Joins terminal namespace `ns` to LAN `br<lan>` with a veth pair whose terminal
    /// end is `ifname`, addressed `addr/24`. The pair is created inside the hub, so no
    /// interface ever appears in the host's namespace.
    fn join(&self, ns: &str, lan: u8, ifname: &str, addr: &str) {
        let hub = self.hub();
        let hub_end = format!("{ifname}h");
        ip(&["-n", &hub, "link", "add", &hub_end, "type", "veth", "peer", "name", ifname, "netns", ns]);
        ip(&["-n", &hub, "link", "set", &hub_end, "master", &format!("br{lan}")]);
        ip(&["-n", &hub, "link", "set", &hub_end, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", ifname]);
        ip(&["-n", ns, "link", "set", ifname, "up", "multicast", "on"]);
    }

    /// Starts a probe in `ns`; `interface` restricts it (None = all but loopback).
    fn start_probe(&mut self, label: &str, ns: &str, id: &str, port: u16, store: &str, interface: Option<&str>) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, PROBE])
            .args(["--name", &format!("Till {label}"), "--id", id])
            .args(["--port", &port.to_string(), "--store", store])
            .args(["--seconds", "60"]);
        if let Some(i) = interface {
            cmd.args(["--interface", i]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the probe {PROBE}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, who) = (self.events_tx.clone(), label.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| Value::String(format!("not JSON: {line}")));
                if tx.send((who.clone(), v)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push(line);
                }
            }
        });
        self.probes.push(Probe { label: label.to_string(), child, stderr });
    }

    fn probe(&mut self, label: &str) -> &mut Probe {
        self.probes.iter_mut().find(|p| p.label == label).unwrap_or_else(|| panic!("no probe {label}"))
    }

    /// Sends SIGTERM to a probe (its pid, printed in its `started` line).
    fn terminate(&mut self, label: &str) {
        let pid = self
            .events
            .seen
            .iter()
            .find(|(who, v)| who == label && v["event"] == "started")
            .and_then(|(_, v)| v["pid"].as_u64())
            .unwrap_or_else(|| panic!("probe {label} has not reported its pid"));
        let ok = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().is_ok_and(|s| s.success());
        assert!(ok, "could not send SIGTERM to probe {label} (pid {pid})");
    }

    /// Waits until `label` exits, returning its status.
    fn wait_exit(&mut self, label: &str, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            let probe = self.probe(label);
            match probe.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if start.elapsed() < within => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => panic!("probe {label} did not exit within {within:?} ({other:?})\n{}", self.diagnostics()),
            }
        }
    }

    /// Everything the probes said, for failure messages.
    fn diagnostics(&self) -> String {
        let mut out = String::from("events:\n");
        for (who, v) in &self.events.seen {
            out.push_str(&format!("  [{who}] {v}\n"));
        }
        for p in &self.probes {
            if let Ok(lines) = p.stderr.lock() {
                if !lines.is_empty() {
                    out.push_str(&format!("stderr of {}:\n  {}\n", p.label, lines.join("\n  ")));
                }
            }
        }
        out
    }

    /// Waits until `done` holds over the events seen so far; panics with
    /// diagnostics after `within`. Returns how long it took.
    fn wait_until(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&[(String, Value)]) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if done(&self.events.seen) {
                return start.elapsed();
            }
            let left = within.saturating_sub(start.elapsed());
            match self.events.rx.recv_timeout(left) {
                Ok(e) => self.events.seen.push(e),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("timed out after {within:?} waiting for: {what}\n{}", self.diagnostics())
                }
            }
        }
    }

    /// Collects events for `period` more.
    fn drain_for(&mut self, period: Duration) {
        let end = Instant::now() + period;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.events.rx.recv_timeout(left) {
                Ok(e) => self.events.seen.push(e),
                Err(_) => break,
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for p in &mut self.probes {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        // Deleting the hub last would also do, but be explicit: every namespace goes.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

struct Events {
    rx: Receiver<(String, Value)>,
    seen: Vec<(String, Value)>,
}

/// Found events of `observer` about `device`.
fn founds<'a>(seen: &'a [(String, Value)], observer: &'a str, device: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    seen.iter()
        .filter(move |(who, v)| who == observer && v["event"] == "found" && v["device_id"] == device)
        .map(|(_, v)| v)
}

fn addresses(v: &Value) -> Vec<String> {
    v["addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn is_loopback(addr: &str) -> bool {
    addr.split('%').next().and_then(|a| a.parse::<IpAddr>().ok()).is_some_and(|ip| ip.is_loopback())
}

// ---------------------------------------------------------------- tests

#[test]
fn terminals_in_separate_namespaces_find_each_other_and_see_the_goodbye() {
    let started = Instant::now();
    let mut rig = Rig::new('a');
    rig.add_lan(0);
    let lan = subnet(0);
    let store = format!("store-{}", std::process::id());
    let terminals = [("a", 1u8, 7701u16), ("b", 2, 7702), ("c", 3, 7703)];
    let mut ids = BTreeMap::new();
    for (label, n, port) in terminals {
        let role = char::from(b'0' + n);
        let ns = rig.add_terminal(role);
        let ifname = format!("v{n}");
        rig.join(&ns, 0, &ifname, &host(lan, n));
        let id = format!("dev-{label}-{}", std::process::id());
        rig.start_probe(label, &ns, &id, port, &store, Some(&ifname));
        ids.insert(label, (id, port));
    }
    let rig_ready = started.elapsed();

    // Everyone finds everyone else, with the right TXT data and a dialable LAN address.
    let took = rig.wait_until("every probe finds the two others", DEADLINE, |seen| {
        ids.keys().all(|observer| {
            ids.iter().filter(|(l, _)| *l != observer).all(|(_, (id, port))| {
                founds(seen, observer, id).any(|v| {
                    let addrs = addresses(v);
                    v["port"] == *port
                        && v["store_id"] == store.as_str()
                        && v["protocol"] == 1
                        && addrs.first().is_some_and(|a| in_subnet(a, lan))
                })
            })
        })
    });
    eprintln!("rig built in {rig_ready:?}; all peers found {took:?} after the probes started");

    for (who, v) in &rig.events.seen {
        if v["event"] == "found" {
            let addrs = addresses(v);
            assert!(!addrs.is_empty(), "[{who}] found without address: {v}");
            assert!(!is_loopback(&addrs[0]), "[{who}] loopback first: {v}");
            assert!(addrs.iter().all(|a| !is_loopback(a)), "[{who}] a remote peer's loopback address: {v}");
            assert_ne!(v["device_id"], ids[who.as_str()].0.as_str(), "[{who}] reported itself");
        }
    }

    // A terminal that shuts down says goodbye: the others report it lost.
    let gone = ids["c"].0.clone();
    rig.terminate("c");
    let took = rig.wait_until("a and b report c lost", DEADLINE, |seen| {
        ["a", "b"].iter().all(|observer| {
            seen.iter().any(|(who, v)| who == observer && v["event"] == "lost" && v["device_id"] == gone.as_str())
        })
    });
    eprintln!("goodbye seen {took:?} after SIGTERM");
    let status = rig.wait_exit("c", Duration::from_secs(5));
    assert!(status.success(), "probe c exited with {status}\n{}", rig.diagnostics());
    rig.wait_until("c reports it stopped on SIGTERM", Duration::from_secs(1), |seen| {
        seen.iter().any(|(who, v)| who == "c" && v["event"] == "stopped" && v["reason"] == "sigterm")
    });
    // Nobody lost anyone else.
    for (who, v) in &rig.events.seen {
        if v["event"] == "lost" {
            assert_eq!(v["device_id"], gone.as_str(), "[{who}] unexpected lost: {v}");
        }
    }
    eprintln!("test took {:?} in all", started.elapsed());
}

#[test]
fn a_probe_restricted_to_one_interface_reports_only_that_subnet() {
    let started = Instant::now();
    let mut rig = Rig::new('b');
    // Two LANs; every terminal is on both.
    rig.add_lan(0);
    rig.add_lan(1);
    let (lan_a, lan_b) = (subnet(1), subnet(2));
    let store = format!("store-{}", std::process::id());
    // r1, r2: restricted to their LAN A interface; u3, u4: unrestricted (the control:
    // shows that mDNS works on LAN B too, so the restriction is what keeps it out).
    let terminals = [("r1", 1u8, true), ("r2", 2, true), ("u3", 3, false), ("u4", 4, false)];
    let mut ids = BTreeMap::new();
    for (label, n, restricted) in terminals {
        let ns = rig.add_terminal(char::from(b'0' + n));
        let (if_a, if_b) = (format!("va{n}"), format!("vb{n}"));
        rig.join(&ns, 0, &if_a, &host(lan_a, n));
        rig.join(&ns, 1, &if_b, &host(lan_b, n));
        let id = format!("dev-{label}-{}", std::process::id());
        let restrict = restricted.then_some(if_a.as_str());
        rig.start_probe(label, &ns, &id, 7700 + u16::from(n), &store, restrict);
        ids.insert(label, id);
    }

    let took = rig.wait_until(
        "restricted probes find each other and the unrestricted ones; u3 sees u4 on both LANs",
        DEADLINE,
        |seen| {
            let restricted_ok = [("r1", ["r2", "u3", "u4"]), ("r2", ["r1", "u3", "u4"])].iter().all(|(obs, peers)| {
                peers.iter().all(|p| {
                    founds(seen, obs, &ids[p]).any(|v| addresses(v).first().is_some_and(|a| in_subnet(a, lan_a)))
                })
            });
            let control_ok = founds(seen, "u3", &ids["u4"]).any(|v| {
                let addrs = addresses(v);
                addrs.iter().any(|a| in_subnet(a, lan_a)) && addrs.iter().any(|a| in_subnet(a, lan_b))
            });
            restricted_ok && control_ok
        },
    );
    eprintln!("found {took:?} after the probes started");
    // Let late address records (IPv6 after duplicate address detection) arrive too.
    rig.drain_for(Duration::from_secs(3));

    for (who, v) in &rig.events.seen {
        if v["event"] != "found" {
            continue;
        }
        // Unrestricted probes leave loopback out too.
        assert!(addresses(v).iter().all(|a| !is_loopback(a)), "[{who}] reported a loopback address: {v}");
        if !who.starts_with('r') {
            continue;
        }
        let own_if = format!("va{}", &who[1..]);
        for a in addresses(v) {
            let ok = match a.split_once('%') {
                // Link-local IPv6: only as seen on the restricted interface.
                Some((_, scope)) => scope == own_if,
                None => in_subnet(&a, lan_a),
            };
            assert!(ok, "[{who}] restricted to {own_if} ({lan_a}/24) reported {a}: {v}\n{}", rig.diagnostics());
        }
    }
    eprintln!("test took {:?} in all", started.elapsed());
}
