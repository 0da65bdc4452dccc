//! Real terminals on a real (virtual) LAN: a network-namespace rig and a launcher that
//! runs the `terminal-server` binary inside a namespace with mDNS on.
//!
//! [`NetnsRig`] builds a `hub` namespace with a bridge, terminal namespaces joined to
//! it by veth pairs, and one veth from the root namespace into the hub (multicast off
//! on the root end) so the test process can reach the terminals over HTTP. Dropping
//! it (also while unwinding from a failed assertion) kills whatever still runs in its
//! namespaces and deletes every namespace and interface it made. Namespace names
//! carry the pid of the test process; rigs left behind by killed runs are reaped.
//!
//! Needs root and iproute2: without them the rig panics with what to install or how
//! to run (it never skips silently).

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::{binary_path, ADMIN_TOKEN};

/// Prefix of the namespaces made here: `tmn<pid><tag><role>`.
const NS_PREFIX: &str = "tmn";
/// Prefix of the root-namespace veth end: `tmr<pid><tag>`.
const ROOT_IF_PREFIX: &str = "tmr";
/// Second octet of the rig subnets (the mDNS adapter's own netns test uses 10.201).
const NET_OCTET: u8 = 202;
/// Port every terminal listens on inside its namespace.
pub const PORT: u16 = 7700;

// ---------------------------------------------------------------- prerequisites

/// Panics with instructions unless this process is root and `ip` works.
pub fn require_root_and_iproute2() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?");
    assert!(
        euid == "0",
        "these tests build network namespaces and must run as root (effective uid is {euid}): \
         run `sudo -E env PATH=$PATH cargo test -p tillmesh-tests --test mdns_netns` \
         (after `cargo build -p terminal-server`)"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need the `ip` command: install iproute2 (`apt-get install -y iproute2`); \
         got {ip:?}"
    );
}

/// Runs `ip ARGS`; panics with its stderr (and a hint) when it fails.
fn ip(args: &[&str]) {
    let out =
        Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}\n(these tests need root with CAP_SYS_ADMIN and CAP_NET_ADMIN; in a \
         container run it privileged)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip").args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// The pid embedded after `prefix` in `name`, when that process no longer exists.
fn dead_owner(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
    !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills every process running in namespace `ns` (SIGKILL, by pid).
fn kill_namespace_processes(ns: &str) {
    for pid in ip_output(&["netns", "pids", ns]).split_whitespace() {
        if pid.chars().all(|c| c.is_ascii_digit()) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// Deletes namespaces and root interfaces left behind by runs that were killed.
fn reap_stale() {
    for line in ip_output(&["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if dead_owner(name, NS_PREFIX) {
            kill_namespace_processes(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    for line in ip_output(&["-o", "link", "show"]).lines() {
        // "17: tmr1234a@if16: <...>"
        let Some(name) = line.split(':').nth(1).map(str::trim) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if dead_owner(name, ROOT_IF_PREFIX) {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

/// Whether any root-namespace address or route is already in `10.NET_OCTET.third.0/24`.
fn subnet_in_use(third: u8) -> bool {
    let needle = format!("10.{NET_OCTET}.{third}.");
    ip_output(&["-4", "-o", "addr", "show"]).contains(&needle) || ip_output(&["-4", "route", "show"]).contains(&needle)
}

// ---------------------------------------------------------------- the rig

/// A terminal namespace of a rig.
#[derive(Clone, Debug)]
pub struct NsHost {
    /// Namespace name.
    pub ns: String,
    /// The veth end inside it (the only interface besides loopback).
    pub ifname: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
}

/// Namespaces and interfaces of one test; see the module docs.
pub struct NetnsRig {
    tag: char,
    subnet: [u8; 3],
    namespaces: Vec<String>,
    root_if: Option<String>,
}

impl NetnsRig {
    /// Builds the hub with its bridge and the root veth (address `.254`). `tag`
    /// (a lower-case letter or digit) tells the rigs of one test process apart.
    ///
    /// # Panics
    /// Without root or iproute2, or when an `ip` command fails.
    pub fn new(tag: char) -> Self {
        require_root_and_iproute2();
        reap_stale();
        let pid = std::process::id();
        let tag_n = u32::from(tag) % 2;
        let start = (pid % 127) * 2 + tag_n;
        let third = (0..128u32)
            .map(|i| u8::try_from((start + i * 2) % 254 + 1).unwrap_or(1))
            .find(|t| !subnet_in_use(*t))
            .unwrap_or_else(|| panic!("no free /24 left in 10.{NET_OCTET}.0.0/16"));
        let mut rig = Self { tag, subnet: [10, NET_OCTET, third], namespaces: Vec::new(), root_if: None };
        let hub = rig.add_namespace("h");
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        // The root end: created in the root namespace with its peer placed in the hub.
        let root_if = format!("{ROOT_IF_PREFIX}{pid}{tag}");
        ip(&["link", "add", &root_if, "type", "veth", "peer", "name", "r0", "netns", &hub]);
        rig.root_if = Some(root_if.clone());
        ip(&["-n", &hub, "link", "set", "r0", "master", "br0"]);
        ip(&["-n", &hub, "link", "set", "r0", "up"]);
        // No IPv6 (no router solicitations, no DAD) and no multicast from the root side.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{root_if}/disable_ipv6"), "1");
        ip(&["addr", "add", &format!("{}/24", rig.host_ip(254)), "dev", &root_if]);
        ip(&["link", "set", &root_if, "up", "multicast", "off"]);
        rig
    }

    /// `10.202.N.host`.
    pub fn host_ip(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, host)
    }

    /// Whether `addr` is in this rig's /24.
    pub fn in_subnet(&self, addr: &str) -> bool {
        addr.parse::<Ipv4Addr>().is_ok_and(|a| a.octets()[..3] == self.subnet[..])
    }

    fn ns_name(&self, role: &str) -> String {
        format!("{NS_PREFIX}{}{}{role}", std::process::id(), self.tag)
    }

    fn add_namespace(&mut self, role: &str) -> String {
        let name = self.ns_name(role);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        name
    }

    /// A terminal namespace `t<host>` on the LAN with address `.host`/24 on its veth
    /// `veth<host>`, loopback up.
    ///
    /// # Panics
    /// When an `ip` command fails.
    pub fn add_host(&mut self, host: u8) -> NsHost {
        let ns = self.add_namespace(&format!("t{host}"));
        let hub = self.ns_name("h");
        let ifname = format!("veth{host}");
        let hub_end = format!("h{host}");
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", &hub_end, "type", "veth", "peer", "name", &ifname, "netns", &ns]);
        ip(&["-n", &hub, "link", "set", &hub_end, "master", "br0"]);
        ip(&["-n", &hub, "link", "set", &hub_end, "up"]);
        let addr = self.host_ip(host);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &ifname]);
        ip(&["-n", &ns, "link", "set", &ifname, "up", "multicast", "on"]);
        NsHost { ns, ifname, ip: addr }
    }
}

impl Drop for NetnsRig {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_namespace_processes(ns);
        }
        // Terminal namespaces first, the hub last; deleting the hub also removes the
        // root veth's peer, but delete the root end explicitly anyway.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Some(root_if) = &self.root_if {
            let _ = Command::new("ip").args(["link", "del", root_if]).stderr(Stdio::null()).status();
        }
    }
}

// ---------------------------------------------------------------- terminals

/// How to start a terminal in a namespace.
#[derive(Clone, Debug)]
pub struct NsTerminalSpec {
    /// Where it runs.
    pub host: NsHost,
    /// `--name`.
    pub name: String,
    /// `--store-key`.
    pub store_key: String,
    /// Further flags.
    pub extra_args: Vec<String>,
}

/// A `terminal-server` process in a namespace with `--discovery mdns` restricted to
/// its veth, listening on `0.0.0.0:7700`; reached from the test process at
/// `http://<namespace ip>:7700`. Killed on drop; its data dir survives restarts.
pub struct NsTerminal {
    spec: NsTerminalSpec,
    data_dir: tempfile::TempDir,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// `http://IP:7700`.
    pub url: String,
    client: reqwest::blocking::Client,
}

impl NsTerminal {
    /// Starts it with a fresh data dir and waits until it prints `listening on`.
    ///
    /// # Errors
    /// If it does not start within 20 s.
    pub fn start(spec: NsTerminalSpec) -> Result<Self> {
        let url = format!("http://{}:{PORT}", spec.host.ip);
        let mut t = Self {
            spec,
            data_dir: tempfile::tempdir()?,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            url,
            client: reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).no_proxy().build()?,
        };
        t.launch()?;
        Ok(t)
    }

    /// The namespace host it runs on.
    pub fn host(&self) -> &NsHost {
        &self.spec.host
    }

    /// Its data dir.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    fn launch(&mut self) -> Result<()> {
        let h = &self.spec.host;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns])
            .arg(binary_path()?)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(["--listen", &format!("0.0.0.0:{PORT}")])
            .args(["--discovery", "mdns", "--mdns-interface", &h.ifname])
            .args(["--heartbeat-interval", "1", "--offline-after", "3"])
            .args(["--sync-interval", "1"])
            .args(["--store-key", &self.spec.store_key])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(["--name", &self.spec.name])
            .args(&self.spec.extra_args)
            .env("RUST_LOG", "info,tillmesh_app=debug,tillmesh_discovery_mdns=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawning `ip netns exec … terminal-server`")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on ") {
                    let _ = tx.send(());
                }
                if let Ok(mut l) = log.lock() {
                    l.push(format!("[stdout] {line}"));
                }
            }
        });
        let log = self.log.clone();
        let echo = std::env::var_os("TEST_LOG").is_some();
        let name = self.spec.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{name}] {line}");
                }
                if let Ok(mut l) = log.lock() {
                    l.push(line);
                }
            }
        });
        self.child = Some(child);
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            self.kill9();
            bail!("{} did not print `listening on` within 20 s\n{}", self.spec.name, self.log_tail(40));
        }
        Ok(())
    }

    /// The last `n` lines it logged.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let skip = lines.len().saturating_sub(n);
        format!("--- log of {} ({}) ---\n{}", self.spec.name, self.spec.host.ip, lines[skip..].join("\n"))
    }

    /// The process id (of `terminal-server` itself: `ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL (a power cut: no goodbye) and waits for it.
    pub fn kill9(&mut self) {
        crate::process::kill_child(&mut self.child);
    }

    /// Sends SIGTERM and waits up to 15 s for a clean exit; returns the exit code.
    ///
    /// # Errors
    /// If it does not exit in time.
    pub fn terminate(&mut self) -> Result<Option<i32>> {
        crate::process::terminate_child(&mut self.child, &self.spec.name)
    }

    /// Starts it again on the same data dir (after [`Self::kill9`] or [`Self::terminate`]).
    ///
    /// # Errors
    /// If it does not start within 20 s.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.launch()
    }

    /// A request with the admin token; status and JSON body (`Null` when empty).
    ///
    /// # Errors
    /// Transport errors.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        crate::process::admin_call(&self.client, &self.url, method, path, body)
    }

    /// Like [`Self::call`] but requires a 2xx.
    ///
    /// # Errors
    /// Non-2xx statuses, with the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, json) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} on {} → {status}: {json}", self.spec.name);
        }
        Ok(json)
    }

    /// `device_id` from `/api/health`.
    ///
    /// # Errors
    /// Transport errors.
    pub fn device_id(&self) -> Result<String> {
        self.ok("GET", "/api/health", None)?["device_id"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("health without device_id"))
    }

    /// `GET /api/network/devices` → the `devices` array.
    ///
    /// # Errors
    /// Transport errors.
    pub fn devices(&self) -> Result<Vec<Value>> {
        Ok(self.ok("GET", "/api/network/devices", None)?["devices"].as_array().cloned().unwrap_or_default())
    }

    /// The registry entry of `device_id`, if listed.
    ///
    /// # Errors
    /// Transport errors.
    pub fn device(&self, device_id: &str) -> Result<Option<Value>> {
        Ok(self.devices()?.into_iter().find(|d| d["device_id"] == device_id))
    }

    /// `GET /api/sync/digest`.
    ///
    /// # Errors
    /// Transport errors.
    pub fn digest(&self) -> Result<Value> {
        self.ok("GET", "/api/sync/digest", None)
    }

    /// Subscribes to `GET /api/events`; the stream's `(event, data)` pairs arrive on
    /// the returned channel until the terminal closes the connection.
    ///
    /// # Errors
    /// If the stream cannot be opened.
    pub fn subscribe_events(&self) -> Result<Receiver<(String, Value)>> {
        let client = reqwest::blocking::Client::builder().timeout(None::<Duration>).no_proxy().build()?;
        let resp = client.get(format!("{}/api/events", self.url)).bearer_auth(ADMIN_TOKEN).send()?;
        if !resp.status().is_success() {
            bail!("GET /api/events → {}", resp.status());
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_sse(resp, &tx));
        Ok(rx)
    }
}

fn read_sse(resp: impl Read, tx: &mpsc::Sender<(String, Value)>) {
    let mut event = String::new();
    let mut data = String::new();
    for line in BufReader::new(resp).lines().map_while(Result::ok) {
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() {
            if !event.is_empty() || !data.is_empty() {
                let v = serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                if tx.send((std::mem::take(&mut event), v)).is_err() {
                    return;
                }
            }
            data.clear();
        }
    }
}

impl Drop for NsTerminal {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` every 100 ms until it returns `Ok(Some(_))` or `timeout` passes; returns
/// the value and how long it took.
///
/// # Errors
/// On timeout, naming `what`, with the last error or value seen.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let mut last;
    loop {
        match f() {
            Ok(Some(v)) => return Ok((v, start.elapsed())),
            Ok(None) => last = "not yet".into(),
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for an event named `kind` whose `data.device_id` is `device_id`.
///
/// # Errors
/// On timeout or when the stream ended.
pub fn wait_event(
    rx: &Receiver<(String, Value)>,
    kind: &str,
    device_id: &str,
    timeout: Duration,
) -> Result<(Value, Duration)> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok((k, v)) if k == kind && v["device_id"] == device_id => return Ok((v, start.elapsed())),
            Ok(_) => {}
            Err(e) => bail!("no `{kind}` event for {device_id} within {timeout:?}: {e}"),
        }
    }
}
