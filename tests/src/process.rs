//! The real `terminal-server` binary as a child process on 127.0.0.1:0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::{ADMIN_TOKEN, STORE_KEY};

/// Path of the built `terminal-server` binary next to this test executable.
///
/// # Errors
/// When it is not built, with the command that builds it.
pub fn binary_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-exe> → target/<profile>/terminal-server
    let dir = exe.parent().and_then(Path::parent).ok_or_else(|| anyhow!("unexpected test executable path"))?;
    let bin = dir.join("terminal-server");
    if !bin.exists() {
        bail!("{} is missing: run `cargo build -p terminal-server` first (cargo xtask ci does)", bin.display());
    }
    Ok(bin)
}

/// A running terminal-server process, killed on drop.
pub struct TerminalProcess {
    child: Option<Child>,
    /// Data dir (kept across restarts of the same terminal).
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Extra arguments it was started with.
    pub args: Vec<String>,
    client: reqwest::blocking::Client,
}

impl TerminalProcess {
    /// Starts a terminal with a fresh data dir, mDNS off, the test store key and
    /// admin token, plus `args`.
    ///
    /// # Errors
    /// If it does not start within 20 s.
    pub fn start(args: &[&str]) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut t = Self::start_in(&dir, args)?;
        t._tmp = Some(tmp);
        Ok(t)
    }

    /// Starts a terminal on an existing data dir (restart).
    ///
    /// # Errors
    /// If it does not start within 20 s.
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(binary_path()?);
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--discovery", "off"])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() });
        if !args.contains(&"--store-key") {
            cmd.args(["--store-key", STORE_KEY]);
        }
        if std::env::var_os("TEST_LOG").is_some() {
            cmd.env("RUST_LOG", "info,tillmesh_app=debug");
        }
        let mut child = cmd.spawn().context("spawning terminal-server")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                bail!("terminal-server did not print `listening on` within 20 s");
            }
        };
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).no_proxy().build()?;
        Ok(Self {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            url,
            args: args.iter().map(|s| s.to_string()).collect(),
            client,
        })
    }

    /// `HOST:PORT` of this terminal.
    pub fn address(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// Sends a request with the admin token; returns status and JSON body (Null when empty).
    ///
    /// # Errors
    /// Transport errors.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        admin_call(&self.client, &self.url, method, path, body)
    }

    /// Like [`Self::call`] but requires a 2xx and returns the body.
    ///
    /// # Errors
    /// Non-2xx statuses, with the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, json) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} → {status}: {json}");
        }
        Ok(json)
    }

    /// The device id.
    ///
    /// # Errors
    /// Transport errors.
    pub fn device_id(&self) -> Result<String> {
        Ok(self.ok("GET", "/api/health", None)?["device_id"].as_str().unwrap_or_default().to_string())
    }

    /// The replicated-state digest.
    ///
    /// # Errors
    /// Transport errors.
    pub fn digest(&self) -> Result<Value> {
        self.ok("GET", "/api/sync/digest", None)
    }

    /// Pairs with another terminal by address.
    ///
    /// # Errors
    /// If pairing fails.
    pub fn pair(&self, other: &TerminalProcess) -> Result<Value> {
        self.ok("POST", "/api/network/pair", Some(&serde_json::json!({"address": other.address()})))
    }

    /// Runs `POST /api/sync/now`.
    ///
    /// # Errors
    /// If it fails.
    pub fn sync_now(&self) -> Result<Value> {
        self.ok("POST", "/api/sync/now", None)
    }

    /// Starts the terminal again on its data dir (which it keeps owning), after
    /// [`TerminalProcess::terminate`] or [`TerminalProcess::kill9`]; it gets a new port.
    ///
    /// # Errors
    /// If it does not start within 20 s.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut next = Self::start_in(&self.data_dir, &args)?;
        self.child = next.child.take();
        self.url = std::mem::take(&mut next.url);
        Ok(())
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
        crate::process::terminate_child(&mut self.child, "terminal-server")
    }
}

impl Drop for TerminalProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends a request to `url` with the admin token; returns status and JSON body (Null
/// when empty, a string when not JSON).
///
/// # Errors
/// Transport errors.
pub fn admin_call(
    client: &reqwest::blocking::Client,
    url: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    token_call(client, url, ADMIN_TOKEN, method, path, body)
}

/// [`admin_call`] with another bearer token (the app token, a wrong one).
///
/// # Errors
/// Transport errors.
pub fn token_call(
    client: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let m = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut req = client.request(m, format!("{url}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send()?;
    let status = resp.status().as_u16();
    let text = resp.text()?;
    let json = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Ok((status, json))
}

/// SIGKILLs a child process (if still there) and reaps it.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Sends SIGTERM to a child process and waits up to 15 s; returns its exit code.
///
/// # Errors
/// If it does not exit in time (it is then killed).
pub fn terminate_child(child: &mut Option<Child>, name: &str) -> Result<Option<i32>> {
    let Some(mut c) = child.take() else {
        return Ok(None);
    };
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = c.try_wait()? {
            return Ok(status.code());
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            bail!("{name} did not exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
///
/// # Errors
/// On timeout, naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    while Instant::now() < deadline {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})")
}
