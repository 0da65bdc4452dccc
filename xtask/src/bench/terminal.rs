//! A real `terminal-server` release process for the bench: loopback, mDNS off, fresh
//! temp data dir, the bench's store key and admin token; plus its HTTP client and
//! what /proc says about its memory. (`spawn_on` and `request` serve sections that
//! keep a terminal's data dir and port across restarts themselves.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::Value;

/// Admin token of every bench terminal.
pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// Store key shared by the bench terminals.
pub(crate) const STORE_KEY: &str = "bench-store-key-0123456789abcdef";

/// An HTTP client for the management API (no proxy, generous timeout: one
/// `sync/now` of a million changes takes minutes).
pub(crate) fn client() -> Result<Client> {
    Ok(Client::builder().timeout(Duration::from_secs(1200)).no_proxy().pool_max_idle_per_host(4).build()?)
}

/// A running terminal, killed on drop.
pub(crate) struct Term {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
    client: Client,
}

impl Term {
    /// Starts `bin` with a fresh data dir, plus `extra` flags.
    pub(crate) fn start(bin: &Path, name: &str, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (child, url) = spawn(bin, dir.path(), name, extra)?;
        Ok(Self { child, url, dir, client: client()? })
    }

    /// Stops the process with SIGTERM (clean shutdown) and starts `bin` again on the
    /// same data dir (it gets a new port).
    pub(crate) fn restart(&mut self, bin: &Path, name: &str, extra: &[&str]) -> Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while self.child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (child, url) = spawn(bin, self.dir.path(), name, extra)?;
        self.child = child;
        self.url = url;
        Ok(())
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `HOST:PORT`.
    pub(crate) fn address(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// A request with the admin token; returns status and raw body.
    pub(crate) fn raw(&self, method: Method, path: &str, body: Option<String>) -> Result<(u16, Vec<u8>)> {
        request(&self.client, &self.url, method, path, body)
    }

    /// Like [`Self::raw`] but requires a 2xx and decodes the JSON body.
    pub(crate) fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        request_ok(&self.client, &self.url, method, path, body)
    }

    /// `POST /api/entities/batch` with a prepared body; the response is discarded.
    pub(crate) fn batch(&self, body: String) -> Result<()> {
        let (status, bytes) = self.raw(Method::POST, "/api/entities/batch", Some(body))?;
        if status != 200 {
            bail!("batch → {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(500)]));
        }
        Ok(())
    }

    /// The replicated-state digest and entity count.
    pub(crate) fn digest(&self) -> Result<(String, u64)> {
        let v = self.ok(Method::GET, "/api/sync/digest", None)?;
        Ok((v["digest"].as_str().unwrap_or_default().to_string(), v["entities"].as_u64().unwrap_or_default()))
    }

    /// `POST /api/network/pair` with `other`.
    pub(crate) fn pair(&self, other: &Term) -> Result<()> {
        self.ok(Method::POST, "/api/network/pair", Some(&serde_json::json!({"address": other.address()})))?;
        Ok(())
    }

    /// `POST /api/sync/now`; returns the changes pulled.
    pub(crate) fn sync_now(&self) -> Result<u64> {
        let v = self.ok(Method::POST, "/api/sync/now", None)?;
        let mut pulled = 0;
        for p in v["peers"].as_array().into_iter().flatten() {
            if let Some(e) = p["error"].as_str() {
                bail!("sync/now: error from peer {}: {e}", p["device_id"]);
            }
            pulled += p["pulled"].as_u64().unwrap_or_default();
        }
        Ok(pulled)
    }

    /// A `/proc/<pid>/status` field in kB (`VmHWM`, `VmRSS`).
    pub(crate) fn status_kb(&self, field: &str) -> Result<u64> {
        proc_status_kb(self.pid(), field)
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS (Linux ≥ 4.0).
    pub(crate) fn reset_peak_rss(&self) -> Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .context("resetting VmHWM through /proc/<pid>/clear_refs")
    }

    /// Bytes of the data dir (database, WAL, secrets).
    pub(crate) fn data_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request to the management API at `url` (`http://HOST:PORT`) with the admin
/// token; returns status and raw body.
pub(crate) fn request(
    client: &Client,
    url: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Vec<u8>)> {
    let mut req = client.request(method, format!("{url}{path}")).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send()?;
    let status = resp.status().as_u16();
    Ok((status, resp.bytes()?.to_vec()))
}

/// Like [`request`] but requires a 2xx and decodes the JSON body.
pub(crate) fn request_ok(
    client: &Client,
    url: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let (status, bytes) = request(client, url, method.clone(), path, body.map(Value::to_string))?;
    if !(200..300).contains(&status) {
        bail!("{method} {url}{path} → {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(500)]));
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Starts `bin` on `dir`, on any free loopback port; returns the child and its base
/// URL once it listens.
fn spawn(bin: &Path, dir: &Path, name: &str, extra: &[&str]) -> Result<(Child, String)> {
    spawn_on(bin, dir, "127.0.0.1:0", name, extra)
}

/// Starts `bin` on `dir`, listening on `listen`; returns the child and its base URL
/// once it listens.
pub(crate) fn spawn_on(bin: &Path, dir: &Path, listen: &str, name: &str, extra: &[&str]) -> Result<(Child, String)> {
    let log = std::env::var_os("BENCH_LOG").is_some();
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", listen, "--discovery", "off"])
        .args(["--admin-token", ADMIN_TOKEN, "--store-key", STORE_KEY])
        .args(["--name", name])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(if log { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining stdout so the pipe never fills.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(u) => Ok((child, u.replace("0.0.0.0", "127.0.0.1"))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait()?;
            bail!("terminal-server exited ({status}) before listening on {listen} (BENCH_LOG=1 shows its log)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("terminal-server did not print `listening on` within 60 s")
        }
    }
}

/// A `/proc/<pid>/status` field in kB.
pub(crate) fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kb = rest.trim().trim_end_matches("kB").trim();
            return Ok(kb.parse()?);
        }
    }
    bail!("no {field} in /proc/{pid}/status")
}
