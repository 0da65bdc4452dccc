//! The dashboard (`GET /`) in a real browser: two real terminals with a real
//! conflict, a failed queued operation and its notification, shown by headless
//! Chromium driven over WebDriver (Debian's chromedriver + fantoccini). Resolving the
//! conflict and acknowledging the notification from the page are checked through the
//! API on both terminals. Saves `target/dashboard.png` (800×480, as on a till) and
//! `target/dashboard-full.png` (the whole page) for people to look at.

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tillmesh_tests::process::wait_until;
use tillmesh_tests::{TerminalProcess, ADMIN_TOKEN};

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL_HINT: &str = "install with: apt-get install -y chromium chromium-driver";
/// The queued operation's target: port 9 (discard) refuses connections on loopback.
const DEAD_TARGET: &str = "http://127.0.0.1:9/never";
/// B's name has markup in it: the page must show it as text, never build elements from it.
const B_NAME: &str = "till-b <i>x</i>";
/// How long the page may take to show something after the data is there.
const UI_TIMEOUT: Duration = Duration::from_secs(15);

/// chromedriver on a free loopback port, in its own process group so that dropping
/// the guard kills it and any browser it started, whatever happened to the test.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start(binary: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let verbose = std::env::var_os("TEST_LOG").is_some();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(if verbose { Stdio::inherit() } else { Stdio::null() })
            .stderr(if verbose { Stdio::inherit() } else { Stdio::null() })
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let driver = Self { child, port };
        wait_until("chromedriver to listen", Duration::from_secs(15), || {
            Ok(TcpStream::connect(("127.0.0.1", port)).is_ok())
        })?;
        Ok(driver)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0)); Chromium inherits it.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium and chromedriver, or the install command as the failure.
fn browser_tools() -> Result<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from(CHROMIUM);
    let driver = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file());
    match (chromium.is_file(), driver) {
        (true, Some(driver)) => Ok((chromium, driver)),
        (has_chromium, driver) => bail!(
            "the dashboard browser test needs {}{}: {INSTALL_HINT}",
            if has_chromium { "" } else { "/usr/bin/chromium " },
            if driver.is_some() { "" } else { "chromedriver" },
        ),
    }
}

/// Headless Chromium at a till's screen size, with a fresh profile.
async fn open_browser(driver: &Chromedriver, chromium: &Path, profile: &Path) -> Result<Client> {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=800,480",
            ],
        },
    });
    let Value::Object(caps) = caps else { bail!("capabilities must be a JSON object") };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url())
        .await
        .context("starting a Chromium session through chromedriver")
}

/// Polls `f` every 100 ms until it yields `Some`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for the page to show {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one element matching `css`, if there is exactly one yet.
async fn one(c: &Client, css: &str) -> Result<Option<Element>> {
    let mut found = c.find_all(Locator::Css(css)).await?;
    Ok(if found.len() == 1 { found.pop() } else { None })
}

/// Visible texts of the elements matching `css` inside `parent`.
async fn texts(parent: &Element, css: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in parent.find_all(Locator::Css(css)).await? {
        out.push(e.text().await?);
    }
    Ok(out)
}

async fn js(c: &Client, script: &str) -> Result<Value> {
    Ok(c.execute(script, vec![]).await?)
}

/// Sizes the page area (not the window) to `width`×`height`: headless Chromium counts
/// window decorations in `--window-size`, which leaves less than 800×480 for the page.
async fn set_viewport(c: &Client, width: u32, height: u32) -> Result<()> {
    let extra =
        js(c, "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]").await?;
    let px = |v: &Value| u32::try_from(v.as_i64().unwrap_or(0).max(0)).unwrap_or(0);
    c.set_window_size(width + px(&extra[0]), height + px(&extra[1])).await?;
    let want = json!([width, height]);
    poll(&format!("a {width}×{height} viewport"), UI_TIMEOUT, || async {
        let got = js(c, "return [window.innerWidth, window.innerHeight]").await?;
        Ok((got == want).then_some(()))
    })
    .await
}

fn sync(t: &TerminalProcess) -> Result<()> {
    let result = t.sync_now()?;
    for peer in result["peers"].as_array().into_iter().flatten() {
        ensure!(peer["error"].is_null(), "sync of {} failed: {result}", t.url);
    }
    Ok(())
}

fn conflicts(t: &TerminalProcess) -> Result<Vec<Value>> {
    let list = t.ok("GET", "/api/sync/conflicts", None)?;
    Ok(list["conflicts"].as_array().cloned().unwrap_or_default())
}

fn price(t: &TerminalProcess) -> Result<Value> {
    Ok(t.ok("GET", "/api/entities/product/p1", None)?["fields"]["price"].clone())
}

fn target_dir() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?;
    let dir = root.join("target");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// What the browser part needs to know about the terminals.
struct Scene<'t> {
    a: &'t TerminalProcess,
    b: &'t TerminalProcess,
    b_id: String,
    conflict_id: String,
    operation_id: String,
}

#[test]
fn dashboard_shows_every_panel_and_resolves_a_conflict_in_a_real_browser() -> Result<()> {
    let (chromium, chromedriver) = browser_tools()?;
    let started = Instant::now();

    // Two terminals of one store. Background sync is pushed far out so that the test
    // decides when changes travel (otherwise a sync between the two writes below
    // would turn the conflict into a plain overwrite). A gives up on a queued
    // operation after one attempt, so a failure and its notification come fast.
    let a = TerminalProcess::start(&[
        "--name",
        "till-a",
        "--sync-interval",
        "86400",
        "--max-retries",
        "1",
        "--retry-base-ms",
        "10",
    ])?;
    let b = TerminalProcess::start(&["--name", B_NAME, "--sync-interval", "86400"])?;
    a.pair(&b)?;
    b.pair(&a)?;
    let b_id = b.device_id()?;

    // A conflict: both terminals know price 100, then each sets its own.
    let p1 = "/api/entities/product/p1";
    a.ok("PUT", p1, Some(&json!({"fields": {"name": "Coffee", "price": 100}})))?;
    sync(&a)?;
    sync(&b)?;
    ensure!(price(&b)? == json!(100), "B did not get price 100");
    a.ok("PUT", p1, Some(&json!({"fields": {"price": 110}})))?;
    b.ok("PUT", p1, Some(&json!({"fields": {"price": 120}})))?;
    sync(&a)?;
    sync(&b)?;
    let (on_a, on_b) = (conflicts(&a)?, conflicts(&b)?);
    ensure!(on_a.len() == 1, "A should list 1 conflict: {on_a:?}");
    ensure!(on_b.len() == 1, "B should list 1 conflict: {on_b:?}");
    ensure!(on_a[0]["id"] == on_b[0]["id"], "a conflict has one id everywhere");
    let conflict_id = on_a[0]["id"].as_str().context("conflict id")?.to_string();

    // A queued operation that fails for good, raising a notification.
    let op =
        a.ok("POST", "/api/queue", Some(&json!({"kind": "http_post", "target": DEAD_TARGET, "payload": {"x": 1}})))?;
    let operation_id = op["id"].as_str().context("operation id")?.to_string();
    wait_until("the operation to fail", Duration::from_secs(20), || {
        Ok(a.ok("GET", "/api/queue/stats", None)?["failed"] == json!(1))
    })?;
    wait_until("a notification", Duration::from_secs(10), || {
        let n = a.ok("GET", "/api/notifications", None)?;
        Ok(n["notifications"].as_array().is_some_and(|l| !l.is_empty()))
    })?;
    let api_ready = started.elapsed();

    // The browser. Declared before the driver so that the profile dir outlives it.
    let profile = tempfile::tempdir()?;
    let driver = Chromedriver::start(&chromedriver)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = rt.block_on(open_browser(&driver, &chromium, profile.path()))?;
    let scene = Scene { a: &a, b: &b, b_id, conflict_id, operation_id };
    let outcome = run_in_browser(&rt, &client, &scene);
    let closed = rt.block_on(client.close());
    drop(driver);
    outcome?;
    closed.context("closing the browser session")?;
    eprintln!("dashboard test: terminals and data ready in {api_ready:.1?}, whole test {:.1?}", started.elapsed());
    Ok(())
}

/// The browser steps, with the API checks between them (blocking calls stay outside
/// the async runtime).
fn run_in_browser(rt: &tokio::runtime::Runtime, c: &Client, s: &Scene<'_>) -> Result<()> {
    rt.block_on(show_everything(c, s))?;

    // A custom value the API refuses: its message shows in the error banner.
    rt.block_on(refused_custom_value(c, s))?;
    ensure!(conflicts(s.a)?.len() == 1, "the refused value resolved the conflict");

    // Keep 120 from the page…
    rt.block_on(keep_value(c, s, "120"))?;
    // …and both the API and the page agree.
    wait_until("A to have no open conflict and price 120", Duration::from_secs(10), || {
        Ok(conflicts(s.a)?.is_empty() && price(s.a)? == json!(120))
    })?;
    rt.block_on(poll("no open conflicts", UI_TIMEOUT, || async {
        let count = one(c, "#conflicts-count").await?;
        let conflicts = c.find_all(Locator::Css("#conflicts .conflict")).await?;
        let banner = js(c, "return document.getElementById('error-banner').hidden").await?;
        Ok(match count {
            Some(n) if conflicts.is_empty() && n.text().await? == "0" => Some(banner),
            _ => None,
        })
    }))
    .and_then(|banner_hidden| {
        ensure!(banner_hidden == json!(true), "a successful action should clear the error banner");
        Ok(())
    })?;
    // The resolution is a change like any other: B gets it with the next sync.
    sync(s.b)?;
    ensure!(conflicts(s.b)?.is_empty(), "B still lists the conflict");
    ensure!(price(s.b)? == json!(120), "B's price is not 120");

    // Acknowledge the notification from the page.
    let acked = rt.block_on(async {
        let n = poll("an unacknowledged notification", UI_TIMEOUT, || {
            one(c, "#notifications .notification[data-acknowledged=false]")
        })
        .await?;
        let id = n.attr("data-notification-id").await?.context("notification id")?;
        n.find(Locator::Css("button.ack")).await?.click().await?;
        anyhow::Ok(id)
    })?;
    wait_until("the notification to be acknowledged", Duration::from_secs(10), || {
        let list = s.a.ok("GET", "/api/notifications", None)?;
        Ok(list["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["id"] == json!(acked) && n["acknowledged"] == json!(true)))
    })?;

    rt.block_on(token_prompt(c))
}

/// Types JSON `null` as the custom value (the API refuses it) and waits for the
/// API's message in the error banner.
async fn refused_custom_value(c: &Client, s: &Scene<'_>) -> Result<()> {
    let css = format!("#conflicts .conflict[data-conflict-id='{}']", s.conflict_id);
    let conflict = c.find(Locator::Css(&css)).await?;
    conflict.find(Locator::Css("input.custom-value")).await?.send_keys("null").await?;
    conflict.find(Locator::Css("button.use-custom")).await?.click().await?;
    let text = poll("the error banner", UI_TIMEOUT, || async {
        let hidden = js(c, "return document.getElementById('error-banner').hidden").await?;
        let text = c.find(Locator::Css("#error-text")).await?.text().await?;
        Ok((hidden == json!(false) && !text.is_empty()).then_some(text))
    })
    .await?;
    ensure!(text.contains("non-null"), "error banner says {text:?}");
    Ok(())
}

/// Without a token the page asks for one; a wrong one (401) asks again; the right
/// one loads the panels.
async fn token_prompt(c: &Client) -> Result<()> {
    js(c, "sessionStorage.clear(); return null").await?;
    c.refresh().await?;
    let prompt = |reason: &'static str| async move {
        let visible = js(c, "return !document.getElementById('token-prompt').hidden").await?;
        let text = c.find(Locator::Css("#token-reason")).await?.text().await?;
        Ok((visible == json!(true) && text.contains(reason)).then_some(()))
    };
    poll("the token prompt", UI_TIMEOUT, || prompt("needs its admin token")).await?;
    let submit = |token: &'static str| async move {
        c.find(Locator::Css("#token-input")).await?.send_keys(token).await?;
        c.find(Locator::Css("#token-form button[type=submit]")).await?.click().await?;
        anyhow::Ok(())
    };
    submit("not-the-admin-token").await?;
    poll("the token prompt after a 401", UI_TIMEOUT, || prompt("did not accept")).await?;
    submit(ADMIN_TOKEN).await?;
    poll("the panels with the right token", UI_TIMEOUT, || async {
        let hidden = js(c, "return document.getElementById('token-prompt').hidden").await?;
        let devices = c.find_all(Locator::Css("#devices .device")).await?;
        Ok((hidden == json!(true) && devices.len() == 2).then_some(()))
    })
    .await?;
    let stored = js(c, "return sessionStorage.getItem('tillmesh.adminToken')").await?;
    ensure!(stored == json!(ADMIN_TOKEN), "token not stored: {stored}");
    Ok(())
}

/// Opens the page with the token in the fragment and waits until every panel shows
/// the data made above; checks the layout at 800×480; saves the screenshots.
async fn show_everything(c: &Client, s: &Scene<'_>) -> Result<()> {
    c.goto(&format!("{}/#token={ADMIN_TOKEN}", s.a.url)).await?;
    set_viewport(c, 800, 480).await?;

    // The token moved from the address bar into sessionStorage.
    let url = c.current_url().await?;
    ensure!(url.fragment().is_none_or(str::is_empty), "token still in the URL: {url}");
    let stored = js(c, "return sessionStorage.getItem('tillmesh.adminToken')").await?;
    ensure!(stored == json!(ADMIN_TOKEN), "token not in sessionStorage: {stored}");
    let prompt_hidden = js(c, "return document.getElementById('token-prompt').hidden").await?;
    ensure!(prompt_hidden == json!(true), "token prompt shown although the URL had a token");

    // Conflicts: the two competing values side by side, each with a Keep button.
    let conflict_css = format!("#conflicts .conflict[data-conflict-id='{}']", s.conflict_id);
    let values = poll("the conflict's values", UI_TIMEOUT, || async {
        let Some(conflict) = one(c, &conflict_css).await? else {
            return Ok(None);
        };
        let values = texts(&conflict, ".value .value-json").await?;
        let keeps = conflict.find_all(Locator::Css("button.keep[data-value-index]")).await?;
        Ok((values.len() == 2 && keeps.len() == 2).then_some(values))
    })
    .await?;
    let mut sorted = values.clone();
    sorted.sort();
    ensure!(sorted == ["110", "120"], "conflict shows {values:?}, expected 110 and 120");

    // Sync indicator: red, because an operation failed.
    let state = poll("a sync state", UI_TIMEOUT, || async {
        let Some(el) = one(c, "#sync-status").await? else {
            return Ok(None);
        };
        let state = el.attr("data-state").await?.unwrap_or_default();
        Ok(["green", "amber", "red"].contains(&state.as_str()).then_some(state))
    })
    .await?;
    ensure!(state == "red", "sync indicator is {state}, expected red (1 failed operation)");
    let detail = c.find(Locator::Css("#sync-detail")).await?.text().await?;
    ensure!(detail.contains("last sync"), "no last sync time in {detail:?}");

    // Devices: B, by id, online.
    let device_css = format!("#devices .device[data-device-id='{}']", s.b_id);
    poll("B in the devices panel", UI_TIMEOUT, || async {
        let Some(d) = one(c, &device_css).await? else {
            return Ok(None);
        };
        let text = d.text().await?;
        Ok((text.contains(&s.b_id) && text.contains(B_NAME) && text.contains("online")).then_some(()))
    })
    .await?;
    let markup = js(c, "return document.querySelectorAll('main i').length").await?;
    ensure!(markup == json!(0), "data was inserted as HTML");

    // Queue: the failed operation with Retry and Cancel.
    let op_css = format!("#queue .operation[data-operation-id='{}']", s.operation_id);
    poll("the failed operation", UI_TIMEOUT, || async {
        let Some(op) = one(c, &op_css).await? else {
            return Ok(None);
        };
        let failed = op.attr("data-status").await?.as_deref() == Some("failed");
        let text = op.text().await?;
        let buttons = texts(&op, "button").await?;
        Ok((failed && text.contains(DEAD_TARGET) && buttons == ["Retry", "Cancel"]).then_some(()))
    })
    .await?;

    // Notifications: the failure, with Acknowledge.
    poll("the notification", UI_TIMEOUT, || async {
        let n = c.find_all(Locator::Css("#notifications .notification button.ack")).await?;
        Ok((!n.is_empty()).then_some(()))
    })
    .await?;

    // Touch layout at 800×480: no sideways scrolling, every visible button ≥ 40 px.
    let layout = js(
        c,
        "const d = document.documentElement;
         const small = [...document.querySelectorAll('button')]
           .filter((b) => b.offsetParent !== null)
           .map((b) => [b.textContent, b.getBoundingClientRect()])
           .filter(([, r]) => r.width < 40 || r.height < 40)
           .map(([t, r]) => t + ' ' + Math.round(r.width) + 'x' + Math.round(r.height));
         return { width: window.innerWidth, scroll: d.scrollWidth, client: d.clientWidth, small };",
    )
    .await?;
    ensure!(layout["scroll"].as_u64() <= layout["client"].as_u64(), "the page scrolls sideways: {layout}");
    ensure!(layout["small"].as_array().is_some_and(Vec::is_empty), "tap targets under 40 px: {layout}");

    // Screenshots once every panel has data: the till's screen, then the whole page.
    let dir = target_dir()?;
    std::fs::write(dir.join("dashboard.png"), c.screenshot().await?)?;
    let height = js(c, "return document.documentElement.scrollHeight").await?;
    let height = height.as_u64().unwrap_or(480).clamp(480, 4000);
    set_viewport(c, 800, u32::try_from(height)?).await?;
    std::fs::write(dir.join("dashboard-full.png"), c.screenshot().await?)?;
    set_viewport(c, 800, 480).await?;
    Ok(())
}

/// Taps "Keep" under the shown value `value` of the scene's conflict.
async fn keep_value(c: &Client, s: &Scene<'_>, value: &str) -> Result<()> {
    let css = format!("#conflicts .conflict[data-conflict-id='{}'] .value", s.conflict_id);
    for candidate in c.find_all(Locator::Css(&css)).await? {
        let shown = candidate.find(Locator::Css(".value-json")).await?.text().await?;
        if shown == value {
            candidate.find(Locator::Css("button.keep")).await?.click().await?;
            return Ok(());
        }
    }
    bail!("no conflict value {value} on the page")
}

/// The pairing screen in a real browser: a code made on A's dashboard (with its
/// countdown) joins B, a terminal of another store, from B's dashboard; B then trusts A
/// and both end up in one store.
#[test]
fn the_pairing_screen_makes_a_code_and_joins_another_till_with_it() -> Result<()> {
    let (chromium, chromedriver) = browser_tools()?;
    let a = TerminalProcess::start(&["--name", "till-a", "--sync-interval", "86400"])?;
    let b = TerminalProcess::start(&[
        "--name",
        "till-b",
        "--sync-interval",
        "86400",
        "--store-key",
        "another-store-key-0123456789abcdef",
    ])?;
    let a_hello = a.ok("GET", "/peer/v1/hello", None)?;
    ensure!(b.ok("GET", "/peer/v1/hello", None)?["store_id"] != a_hello["store_id"], "two stores to begin with");

    let profile = tempfile::tempdir()?;
    let driver = Chromedriver::start(&chromedriver)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = rt.block_on(open_browser(&driver, &chromium, profile.path()))?;
    let outcome = rt.block_on(async {
        let c = &client;
        c.goto(&format!("{}/#token={ADMIN_TOKEN}", a.url)).await?;
        poll("the pairing panel", UI_TIMEOUT, || async { one(c, "#make-code").await }).await?.click().await?;
        let code = poll("a six-digit code", UI_TIMEOUT, || async {
            let t = c.find(Locator::Css("#pairing-code")).await?.text().await?;
            Ok((t.len() == 6 && t.chars().all(|ch| ch.is_ascii_digit())).then_some(t))
        })
        .await?;
        let countdown = c.find(Locator::Css("#pairing-countdown")).await?.text().await?;
        ensure!(countdown.starts_with("valid 4:") || countdown.starts_with("valid 5:"), "countdown {countdown:?}");

        c.goto(&format!("{}/#token={ADMIN_TOKEN}", b.url)).await?;
        poll("B's pairing panel", UI_TIMEOUT, || async { one(c, "#join-form").await }).await?;
        c.find(Locator::Css("#join-address")).await?.send_keys(&a.address()).await?;
        c.find(Locator::Css("#join-code")).await?.send_keys(&code).await?;
        c.find(Locator::Css("#join-submit")).await?.click().await?;
        poll("the join's result", Duration::from_secs(30), || async {
            let t = c.find(Locator::Css("#pair-result")).await?.text().await?;
            Ok(t.contains("Paired with till-a").then_some(()))
        })
        .await?;
        poll("A trusted in B's device list", UI_TIMEOUT, || async {
            let list = c.find(Locator::Css("#devices")).await?;
            let names = texts(&list, ".device .title").await?;
            let untrusted = texts(&list, ".badge").await?.iter().any(|t| t == "untrusted");
            Ok((names.iter().any(|n| n == "till-a") && !untrusted).then_some(()))
        })
        .await
    });
    let closed = rt.block_on(client.close());
    drop(driver);
    outcome?;
    closed.context("closing the browser session")?;
    ensure!(b.ok("GET", "/peer/v1/hello", None)?["store_id"] == a_hello["store_id"], "B joined A's store");
    let devices = b.ok("GET", "/api/network/devices", None)?;
    let a_id = a_hello["device_id"].clone();
    ensure!(
        devices["devices"]
            .as_array()
            .context("devices")?
            .iter()
            .any(|d| d["device_id"] == a_id && d["trusted"] == true),
        "B trusts A: {devices}"
    );
    Ok(())
}
