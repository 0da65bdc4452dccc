//! Figure 6, "a year in a store", compressed: five real terminals on fixed ports,
//! restarted every day (and killed with SIGKILL about once a month), Zipf-popular
//! sales, price edits and deliberate conflicts, one terminal replaced mid-year; the
//! figures of the last day against those of day 1 of the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

use super::terminal::{self, request, request_ok, spawn_on};
use super::{num, Ctx, Figure, Opts};

/// Terminals of the store.
const TERMINALS: usize = 5;
/// Products `p0000`..`p0499`.
const PRODUCTS: usize = 500;
/// Zipf exponent of product popularity.
const ZIPF_S: f64 = 1.0;
/// Sales per day, over all terminals.
const SALES_PER_DAY: usize = 30;
/// Lines (distinct products) per sale.
const LINES_PER_SALE: usize = 3;
/// Price edits per day (all on one terminal, the day's back office).
const PRICE_EDITS_PER_DAY: usize = 20;
/// Sales of the write-rate figure, on day 1 and on the last day.
const RATE_SALES: usize = 300;
/// Rounds of [`RATE_SALES`] whose median is the sale rate.
const RATE_ROUNDS: usize = 3;
/// Stock every product starts with.
const INITIAL_STOCK: i64 = 1000;
/// Seed of everything random.
const SEED: u64 = 0x7ea2_5eed_0365_0001;
/// Deliberate conflicts on every 7th day (two on every 14th).
const CONFLICT_EVERY: u32 = 7;
/// Terminal `i` is killed on the days where `day % 30 == i * 6`.
const KILL_EVERY: u32 = 30;
/// Background sync period: long, the bench drives sync with `sync/now`.
const SYNC_INTERVAL: &str = "3600";
/// End-of-day sync rounds before the terminals must agree.
const MAX_ROUNDS: u32 = 5;
/// Longest a bootstrap may take.
const BOOTSTRAP_LIMIT: Duration = Duration::from_secs(900);
/// The most popular product, whose record the bench watches.
const HOT: &str = "p0000";

/// Seconds the section is expected to take for `opts` (for planning the sections before it).
pub(crate) fn planned_secs(opts: &Opts) -> u64 {
    30 + 300 * u64::from(opts.year_days) / 365
}

/// xorshift64: small, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf over `0..n`: P(k) ∝ 1 / (k + 1)^s.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1)
    }

    /// `k` distinct samples.
    fn distinct(&self, rng: &mut Rng, k: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let p = self.sample(rng);
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

fn product_id(i: usize) -> String {
    format!("p{i:04}")
}

/// What the bench expects the store to hold.
struct Model {
    price: Vec<i64>,
    /// Units sold per product (acknowledged sales, and in-flight ones that were kept).
    sold: Vec<i64>,
    sales: BTreeSet<String>,
}

impl Model {
    /// `POST /api/entities/batch` body of one sale: the sale and one stock decrement per line.
    fn sale_body(&self, id: &str, products: &[usize]) -> String {
        let lines: Vec<Value> =
            products.iter().map(|&p| json!({"product": product_id(p), "qty": 1, "price": self.price[p]})).collect();
        let total: i64 = products.iter().map(|&p| self.price[p]).sum();
        let mut ops = vec![json!({"op": "put", "type": "sale", "id": id, "fields": {"lines": lines, "total": total}})];
        for &p in products {
            ops.push(json!({"op": "counter", "type": "product", "id": product_id(p), "field": "stock", "delta": -1}));
        }
        json!({ "ops": ops }).to_string()
    }

    fn record_sale(&mut self, id: &str, products: &[usize]) {
        for &p in products {
            self.sold[p] += 1;
        }
        self.sales.insert(id.to_string());
    }
}

/// One `POST /api/sync/now` answer.
struct SyncAnswer {
    peers: usize,
    pulled: u64,
    /// (peer device id, error).
    errors: Vec<(String, String)>,
}

/// One terminal of the store: a fixed port and data dir for its whole life.
struct Till {
    name: String,
    port: u16,
    dir: PathBuf,
    /// Ports it is started with `--peer` to.
    peers: Vec<u16>,
    child: Option<Child>,
    url: String,
    client: Client,
    device_id: String,
}

impl Till {
    fn new(name: &str, port: u16, dir: PathBuf, peers: Vec<u16>) -> Result<Self> {
        Ok(Self {
            name: name.into(),
            port,
            dir,
            peers,
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            client: terminal::client()?,
            device_id: String::new(),
        })
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the process on its data dir and port (retrying while the port is still taken).
    fn start(&mut self, bin: &Path) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut extra = vec!["--sync-interval".to_string(), SYNC_INTERVAL.into()];
        for p in &self.peers {
            extra.push("--peer".into());
            extra.push(format!("127.0.0.1:{p}"));
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let listen = self.address();
        let mut attempt = 0;
        let child = loop {
            match spawn_on(bin, &self.dir, &listen, &self.name, &extra) {
                Ok((child, _)) => break child,
                Err(e) if attempt < 30 => {
                    attempt += 1;
                    if attempt == 1 {
                        eprintln!("[year]   {} did not start ({e:#}); retrying", self.name);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.context(format!("starting {} on {listen}", self.name))),
            }
        };
        self.child = Some(child);
        // A fresh pool: no connection of the previous process is reused.
        self.client = terminal::client()?;
        let health = self.call(Method::GET, "/api/health", None)?;
        self.device_id = health["device_id"].as_str().context("health without device_id")?.to_string();
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        self.client = terminal::client()?;
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {} ({}) failed", child.id(), self.name);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status} after SIGTERM", self.name);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within 60 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL (`kill -9`), then reaps it.
    fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        request_ok(&self.client, &self.url, method, path, body).with_context(|| self.name.clone())
    }

    fn batch(&self, body: String) -> Result<()> {
        let (status, bytes) = request(&self.client, &self.url, Method::POST, "/api/entities/batch", Some(body))?;
        if !(200..300).contains(&status) {
            bail!(
                "{}: POST /api/entities/batch → {status}: {}",
                self.name,
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            );
        }
        Ok(())
    }

    fn sync_now(&self) -> Result<SyncAnswer> {
        let v = self.call(Method::POST, "/api/sync/now", None)?;
        let peers = v["peers"].as_array().with_context(|| format!("{}: sync/now answer without peers", self.name))?;
        let mut a = SyncAnswer { peers: peers.len(), pulled: 0, errors: Vec::new() };
        for p in peers {
            a.pulled += p["pulled"].as_u64().unwrap_or_default();
            if let Some(e) = p["error"].as_str() {
                a.errors.push((p["device_id"].as_str().unwrap_or_default().to_string(), e.to_string()));
            }
        }
        Ok(a)
    }

    /// (digest, entities, open conflicts).
    fn digest(&self) -> Result<(String, u64, u64)> {
        let v = self.call(Method::GET, "/api/sync/digest", None)?;
        Ok((
            v["digest"].as_str().context("digest answer without digest")?.to_string(),
            v["entities"].as_u64().context("digest answer without entities")?,
            v["open_conflicts"].as_u64().unwrap_or_default(),
        ))
    }

    /// Every entity of `ty`, paging through `GET /api/entities/{ty}`.
    fn list_all(&self, ty: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/api/entities/{ty}?limit=1000&after={a}"),
                None => format!("/api/entities/{ty}?limit=1000"),
            };
            let mut page = self.call(Method::GET, &path, None)?;
            if let Some(list) = page["entities"].as_array_mut() {
                out.append(list);
            }
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return Ok(out),
            }
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.join("tillmesh.db")
    }
}

impl Drop for Till {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free loopback port (the listener is closed again; the terminal binds it later).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()?)
}

/// Size of every file under `dir`, by path relative to `dir`.
fn dir_files(dir: &Path) -> Result<BTreeMap<String, u64>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                walk(root, &e.path(), out)?;
            } else {
                let name = e.path().strip_prefix(root).unwrap_or(&e.path()).display().to_string();
                out.insert(name, m.len());
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// `name bytes` of the files, biggest first.
fn breakdown(files: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<_> = files.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let text = |n: u64| if n >= 1000 { num(n as f64) } else { n.to_string() };
    v.iter().map(|(name, bytes)| format!("{name} {}", text(**bytes))).collect::<Vec<_>>().join(", ")
}

#[derive(QueryableByName)]
struct RecordRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    head: Option<String>,
}

/// The hot product's latest change record.
struct HotRecord {
    bytes: u64,
    /// How it was found.
    how: &'static str,
    /// Its first 4,000 characters, for the details.
    head: String,
}

/// The hot product's latest change record, read from the running terminal's
/// database (read-only; WAL lets it read beside the writer).
fn hot_record(db: &Path) -> Result<HotRecord> {
    let url = format!("file:{}?mode=ro", db.display());
    let mut conn = SqliteConnection::establish(&url).with_context(|| format!("opening {url}"))?;
    conn.batch_execute("PRAGMA busy_timeout = 5000;")?;
    // length() of TEXT counts characters; of a BLOB, bytes.
    // A record of the entity's current state: what the next sale of it writes. The
    // record at `updated_pos` holds that state, unless concurrent records were merged
    // (then the merged state is in `entities.state`, and the latest record may know
    // only its own writer); the header around it is the same either way.
    let joined: Vec<RecordRow> = diesel::sql_query(format!(
        "SELECT length(CAST(c.record AS BLOB)) \
              - length(CAST(json_extract(c.record, '$.state') AS BLOB)) \
              + length(CAST(coalesce(e.state, json_extract(c.record, '$.state')) AS BLOB)) AS n, \
              substr(coalesce(e.state, c.record), 1, 4000) AS head \
         FROM entities e JOIN change_log c ON c.pos = e.updated_pos \
         WHERE e.entity_type = 'product' AND e.entity_id = '{HOT}'"
    ))
    .load(&mut conn)?;
    if let Some(RecordRow { n: Some(n), head }) = joined.into_iter().next() {
        let how = "a record of its current state (the record at entities.updated_pos, with the merged state when entities.state holds one)";
        return Ok(HotRecord { bytes: n as u64, how, head: head.unwrap_or_default() });
    }
    let scanned: Vec<RecordRow> = diesel::sql_query(format!(
        "SELECT length(CAST(record AS BLOB)) AS n, substr(record, 1, 4000) AS head FROM change_log \
         WHERE record LIKE '%\"entity_id\":\"{HOT}\"%' ORDER BY n DESC LIMIT 1"
    ))
    .load(&mut conn)?;
    match scanned.into_iter().next() {
        Some(RecordRow { n: Some(n), head }) => Ok(HotRecord {
            bytes: n as u64,
            how: "largest change_log record naming it (the updated_pos join found nothing)",
            head: head.unwrap_or_default(),
        }),
        _ => bail!("no change record of product/{HOT} in {}", db.display()),
    }
}

/// A bootstrap of a fresh terminal from terminal 0.
#[derive(Clone, Debug)]
struct Boot {
    day: u32,
    /// Start of the process to equal digests.
    secs: f64,
    /// Time inside `sync/now` calls.
    sync_secs: f64,
    pulled: u64,
    entities: u64,
    calls: u32,
}

impl Boot {
    fn per_entity(&self) -> f64 {
        self.pulled as f64 / self.entities.max(1) as f64
    }

    fn rate(&self) -> f64 {
        self.pulled as f64 / self.sync_secs.max(1e-9)
    }

    fn json(&self) -> Value {
        json!({"day": self.day, "s": self.secs, "sync_s": self.sync_secs, "pulled": self.pulled,
               "entities": self.entities, "sync_now_calls": self.calls})
    }
}

/// Terminal 0's state at the end of a day (the data dir is measured at its next clean stop).
#[derive(Clone, Debug, Default)]
struct Snapshot {
    day: u32,
    sale_rate: f64,
    /// `/proc/loadavg` right after the sale-rate measurement.
    load: String,
    hot_bytes: u64,
    hot_how: &'static str,
    hot_head: String,
    hot_writers: usize,
    entities: u64,
    json_bytes: u64,
    fields_bytes: u64,
    version_bytes: u64,
    /// Files of the data dir after a clean stop.
    dir_files: Option<BTreeMap<String, u64>>,
}

impl Snapshot {
    fn dir_bytes(&self) -> Option<u64> {
        self.dir_files.as_ref().map(|f| f.values().sum())
    }

    /// Bytes of the database file itself (no WAL).
    fn db_bytes(&self) -> u64 {
        self.dir_files.as_ref().and_then(|f| f.get("tillmesh.db")).copied().unwrap_or_default()
    }

    fn json(&self) -> Value {
        json!({"day": self.day, "sale_rate_per_s": self.sale_rate, "load_average": self.load, "hot_record_bytes": self.hot_bytes,
               "hot_record_found_by": self.hot_how, "hot_record_head": self.hot_head, "hot_version_writers": self.hot_writers,
               "entities": self.entities, "live_json_bytes": self.json_bytes,
               "live_fields_json_bytes": self.fields_bytes, "live_version_json_bytes": self.version_bytes,
               "data_dir_bytes": self.dir_bytes(), "data_dir_files": self.dir_files})
    }
}

/// Counters of the run.
#[derive(Default)]
struct Stats {
    restarts: u32,
    kills: u32,
    restart_s: f64,
    sales_s: f64,
    edits_s: f64,
    conflicts_s: f64,
    sync_s: f64,
    sync_rounds: u32,
    extra_rounds: u32,
    pulled: u64,
    /// Errors from device ids no longer served at their address (replaced terminal).
    stale_errors: u64,
    first_stale_errors: Vec<String>,
    other_errors: u64,
    first_errors: Vec<String>,
    conflicts_made: u32,
    conflicts_found: u32,
    inflight_sent: u32,
    inflight_acked: u32,
    inflight_kept: u32,
    lost_acked: Vec<String>,
}

/// The five terminals and what the bench knows about them.
struct Store {
    bin: PathBuf,
    root: PathBuf,
    tills: Vec<Till>,
    /// Device ids that no longer run (replaced or throwaway terminals).
    retired: BTreeSet<String>,
    model: Model,
    rng: Rng,
    zipf: Zipf,
    stats: Stats,
    day: u32,
}

impl Store {
    fn note(&mut self, who: &str, a: &SyncAnswer) {
        self.stats.pulled += a.pulled;
        for (device, e) in &a.errors {
            if self.retired.contains(device) {
                self.stats.stale_errors += 1;
                if self.stats.first_stale_errors.len() < 3 {
                    let line = format!("day {}: {who} pulling from {device}: {e}", self.day);
                    self.stats.first_stale_errors.push(line);
                }
            } else {
                self.stats.other_errors += 1;
                if self.stats.first_errors.len() < 10 {
                    let line = format!("day {}: {who} pulling from {device}: {e}", self.day);
                    eprintln!("[year]   sync error: {line}");
                    self.stats.first_errors.push(line);
                }
            }
        }
    }

    fn sync_one(&mut self, i: usize) -> Result<SyncAnswer> {
        let a = self.tills[i].sync_now()?;
        let name = self.tills[i].name.clone();
        self.note(&name, &a);
        Ok(a)
    }

    /// `sync/now` on every terminal at once.
    fn sync_round(&mut self) -> Result<()> {
        let answers: Vec<Result<SyncAnswer>> = std::thread::scope(|s| {
            let handles: Vec<_> = self.tills.iter().map(|t| s.spawn(move || t.sync_now())).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("sync thread panicked")))).collect()
        });
        self.stats.sync_rounds += 1;
        for (i, a) in answers.into_iter().enumerate() {
            let a = a?;
            let name = self.tills[i].name.clone();
            self.note(&name, &a);
        }
        Ok(())
    }

    /// Sync rounds until every terminal has the same digest. Returns open conflicts.
    fn converge(&mut self) -> Result<u64> {
        let t = Instant::now();
        let mut last = Vec::new();
        for round in 1..=MAX_ROUNDS {
            self.sync_round()?;
            last = self.tills.iter().map(Till::digest).collect::<Result<Vec<_>>>()?;
            if last.iter().all(|d| d.0 == last[0].0) {
                self.stats.extra_rounds += round - 1;
                self.stats.sync_s += t.elapsed().as_secs_f64();
                return Ok(last[0].2);
            }
        }
        let got: Vec<String> = self
            .tills
            .iter()
            .zip(&last)
            .map(|(t, d)| format!("{} {} ({} entities)", t.name, &d.0[..12], d.1))
            .collect();
        bail!("day {}: terminals differ after {MAX_ROUNDS} sync rounds: {}", self.day, got.join(", "))
    }

    /// Restarts every terminal on its data dir and port: SIGTERM, or SIGKILL with a
    /// sale possibly in flight on its kill day. Returns terminal 0's data dir bytes
    /// at its clean stop when `measure` is set.
    fn restart_all(&mut self, measure: bool) -> Result<Option<BTreeMap<String, u64>>> {
        let mut measured = None;
        for i in 0..TERMINALS {
            let t = Instant::now();
            if self.day % KILL_EVERY == (i as u32 * 6) % KILL_EVERY && !(measure && i == 0) {
                self.kill_in_flight(i)?;
            } else {
                self.tills[i].stop()?;
                if measure && i == 0 {
                    measured = Some(dir_files(&self.tills[0].dir)?);
                }
                self.tills[i].start(&self.bin)?;
            }
            self.stats.restarts += 1;
            self.stats.restart_s += t.elapsed().as_secs_f64();
        }
        Ok(measured)
    }

    /// `kill -9` while a sale may be in flight, start again, and check that a sale the
    /// terminal acknowledged survived.
    fn kill_in_flight(&mut self, i: usize) -> Result<()> {
        let id = format!("k{:03}-{i}", self.day);
        let products = self.zipf.distinct(&mut self.rng, LINES_PER_SALE);
        let body = self.model.sale_body(&id, &products);
        let (client, url) = (self.tills[i].client.clone(), self.tills[i].url.clone());
        let sender = std::thread::spawn(move || {
            request(&client, &url, Method::POST, "/api/entities/batch", Some(body)).map(|(s, _)| s)
        });
        std::thread::sleep(Duration::from_micros(self.rng.below(1500) as u64));
        self.tills[i].kill()?;
        let acked = matches!(sender.join(), Ok(Ok(200)));
        self.tills[i].start(&self.bin)?;
        let t = &self.tills[i];
        let (status, bytes) = request(&t.client, &t.url, Method::GET, &format!("/api/entities/sale/{id}"), None)?;
        let kept = match status {
            200 => true,
            404 => false,
            s => bail!("{}: GET sale/{id} → {s}: {}", t.name, String::from_utf8_lossy(&bytes[..bytes.len().min(500)])),
        };
        self.stats.kills += 1;
        self.stats.inflight_sent += 1;
        self.stats.inflight_acked += u32::from(acked);
        self.stats.inflight_kept += u32::from(kept);
        if acked && !kept {
            let msg =
                format!("day {}: sale {id} acknowledged by {} before kill -9, gone after restart", self.day, t.name);
            eprintln!("[year]   LOST: {msg}");
            self.stats.lost_acked.push(msg);
        }
        if kept {
            self.model.record_sale(&id, &products);
        }
        Ok(())
    }

    /// The write-rate figure: single-line sales of the hot product to terminal 0.
    /// The median of [`RATE_ROUNDS`] rounds of [`RATE_SALES`] sales: one round swung 2x
    /// with the load of whatever else ran on the machine.
    fn sale_rate(&mut self) -> Result<f64> {
        let mut rates = Vec::with_capacity(RATE_ROUNDS);
        for round in 0..RATE_ROUNDS {
            let bodies: Vec<(String, String)> = (0..RATE_SALES)
                .map(|k| {
                    let id = format!("r{:03}-{round}-{k:03}", self.day);
                    let body = self.model.sale_body(&id, &[0]);
                    (id, body)
                })
                .collect();
            let t = Instant::now();
            for (_, body) in &bodies {
                self.tills[0].batch(body.clone())?;
            }
            rates.push(RATE_SALES as f64 / t.elapsed().as_secs_f64());
            for (id, _) in &bodies {
                self.model.record_sale(id, &[0]);
            }
        }
        rates.sort_by(f64::total_cmp);
        Ok(rates[rates.len() / 2])
    }

    /// The day's sales, spread over the terminals.
    fn sales(&mut self) -> Result<()> {
        let t = Instant::now();
        for k in 0..SALES_PER_DAY {
            let i = self.rng.below(TERMINALS);
            let id = format!("s{:03}-{k:02}", self.day);
            let products = self.zipf.distinct(&mut self.rng, LINES_PER_SALE);
            self.tills[i].batch(self.model.sale_body(&id, &products))?;
            self.model.record_sale(&id, &products);
        }
        self.stats.sales_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// The day's price edits, on one terminal (the back office of the day). Returns the products edited.
    fn price_edits(&mut self) -> Result<BTreeSet<usize>> {
        let t = Instant::now();
        let i = self.day as usize % TERMINALS;
        let mut edited = BTreeSet::new();
        for _ in 0..PRICE_EDITS_PER_DAY {
            let p = self.rng.below(PRODUCTS);
            let price = 100 + self.rng.below(4900) as i64;
            self.tills[i].call(
                Method::PUT,
                &format!("/api/entities/product/{}", product_id(p)),
                Some(&json!({"fields": {"price": price}})),
            )?;
            self.model.price[p] = price;
            edited.insert(p);
        }
        self.stats.edits_s += t.elapsed().as_secs_f64();
        Ok(edited)
    }

    /// Conflicts made on purpose: two terminals set one product's price to different
    /// values before syncing; after both synced, one terminal resolves them.
    fn conflicts(&mut self, count: usize, avoid: &BTreeSet<usize>) -> Result<()> {
        let t = Instant::now();
        let mut involved = Vec::new();
        let mut avoid = avoid.clone();
        for _ in 0..count {
            let p = loop {
                let p = self.rng.below(PRODUCTS);
                if avoid.insert(p) {
                    break p;
                }
            };
            let a = self.rng.below(TERMINALS);
            let b = (a + 1 + self.rng.below(TERMINALS - 1)) % TERMINALS;
            let pa = 100 + self.rng.below(4900) as i64;
            let pb = pa + 1 + self.rng.below(50) as i64;
            for (i, price) in [(a, pa), (b, pb)] {
                self.tills[i].call(
                    Method::PUT,
                    &format!("/api/entities/product/{}", product_id(p)),
                    Some(&json!({"fields": {"price": price}})),
                )?;
                if !involved.contains(&i) {
                    involved.push(i);
                }
            }
        }
        self.stats.conflicts_made += count as u32;
        for &i in &involved {
            self.sync_one(i)?;
        }
        let judge = involved[0];
        let list = self.tills[judge].call(Method::GET, "/api/sync/conflicts", None)?;
        for c in list["conflicts"].as_array().into_iter().flatten() {
            let id = c["id"].as_str().context("conflict without id")?;
            let r = self.tills[judge].call(
                Method::POST,
                "/api/sync/conflicts/resolve",
                Some(&json!({"conflict_id": id, "resolution": "local"})),
            )?;
            self.stats.conflicts_found += 1;
            if c["entity_type"] == "product" && c["field"] == "price" {
                let p = c["entity_id"].as_str().and_then(|s| s.strip_prefix('p')).and_then(|s| s.parse::<usize>().ok());
                match (p, r["value"].as_i64()) {
                    (Some(p), Some(v)) if p < PRODUCTS => self.model.price[p] = v,
                    _ => bail!("unexpected resolution {r} of conflict {c}"),
                }
            }
        }
        self.stats.conflicts_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// Terminal 0's figures at the end of the day (all terminals converged).
    fn snapshot(&self, sale_rate: f64) -> Result<Snapshot> {
        let t0 = &self.tills[0];
        let rec = hot_record(&t0.db())?;
        let hot = t0.call(Method::GET, &format!("/api/entities/product/{HOT}"), None)?;
        let (_, entities, _) = t0.digest()?;
        let mut s = Snapshot {
            day: self.day,
            sale_rate,
            load: super::load_average(),
            hot_bytes: rec.bytes,
            hot_how: rec.how,
            hot_head: rec.head,
            hot_writers: hot["version"].as_object().map_or(0, |v| v.len()),
            entities,
            ..Snapshot::default()
        };
        for ty in ["product", "sale"] {
            for e in t0.list_all(ty)? {
                s.json_bytes += e.to_string().len() as u64;
                s.fields_bytes += e["fields"].to_string().len() as u64;
                s.version_bytes += e["version"].to_string().len() as u64;
            }
        }
        Ok(s)
    }

    /// A fresh terminal paired (`--peer`) with terminal 0 only, timed from its start
    /// until its digest is terminal 0's.
    fn bootstrap(&mut self, fresh: &mut Till) -> Result<Boot> {
        self.sync_one(0)?;
        let (want, entities, _) = self.tills[0].digest()?;
        let t = Instant::now();
        fresh.start(&self.bin)?;
        let (mut pulled, mut calls, mut in_sync) = (0u64, 0u32, Duration::ZERO);
        loop {
            let t1 = Instant::now();
            let a = fresh.sync_now()?;
            in_sync += t1.elapsed();
            calls += 1;
            pulled += a.pulled;
            let name = fresh.name.clone();
            self.note(&name, &a);
            if fresh.digest()?.0 == want {
                break;
            }
            if t.elapsed() > BOOTSTRAP_LIMIT {
                bail!(
                    "{} not in sync with terminal 0 after {:.0?} ({calls} sync/now, {pulled} pulled)",
                    fresh.name,
                    t.elapsed()
                );
            }
            if a.peers == 0 || a.pulled == 0 {
                // Not paired yet (the --peer pairing runs in the background), or idle.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(Boot {
            day: self.day,
            secs: t.elapsed().as_secs_f64(),
            sync_secs: in_sync.as_secs_f64(),
            pulled,
            entities,
            calls,
        })
    }

    /// A throwaway fresh terminal's bootstrap (stopped and deleted afterwards).
    fn throwaway_bootstrap(&mut self) -> Result<Boot> {
        let port = free_ports(1)?[0];
        let name = format!("year-new-d{}", self.day);
        let mut fresh = Till::new(&name, port, self.root.join(&name), vec![self.tills[0].port])?;
        let boot = self.bootstrap(&mut fresh)?;
        self.retired.insert(fresh.device_id.clone());
        fresh.stop()?;
        let _ = std::fs::remove_dir_all(&fresh.dir);
        Ok(boot)
    }

    /// Terminal 4 is replaced: a new till with an empty data dir on the same port,
    /// bootstrapped from terminal 0 only, then paired with everybody.
    fn replace_last(&mut self) -> Result<Boot> {
        let last = TERMINALS - 1;
        self.tills[last].stop()?;
        let old = self.tills[last].device_id.clone();
        std::fs::remove_dir_all(&self.tills[last].dir)?;
        let mut fresh = Till::new(
            &self.tills[last].name,
            self.tills[last].port,
            self.tills[last].dir.clone(),
            vec![self.tills[0].port],
        )?;
        // Its old device id stays in the others' registries, at the same address.
        self.retired.insert(old);
        let boot = self.bootstrap(&mut fresh)?;
        fresh.peers = self.tills.iter().take(last).map(|t| t.port).collect();
        for t in self.tills.iter().take(last) {
            t.call(Method::POST, "/api/network/pair", Some(&json!({"address": fresh.address()})))?;
            if t.port != self.tills[0].port {
                fresh.call(Method::POST, "/api/network/pair", Some(&json!({"address": t.address()})))?;
            }
        }
        self.tills[last] = fresh;
        Ok(boot)
    }

    /// Checks terminal 0 against the model: every kept sale, every product's stock and price.
    fn integrity(&self) -> Result<Vec<String>> {
        let t0 = &self.tills[0];
        let mut problems = Vec::new();
        let sales: BTreeSet<String> =
            t0.list_all("sale")?.iter().filter_map(|e| e["id"].as_str().map(String::from)).collect();
        if sales != self.model.sales {
            let missing = self.model.sales.difference(&sales).take(5).cloned().collect::<Vec<_>>();
            let extra = sales.difference(&self.model.sales).take(5).cloned().collect::<Vec<_>>();
            problems.push(format!(
                "{} sales held, {} expected (missing e.g. {missing:?}, unexpected e.g. {extra:?})",
                sales.len(),
                self.model.sales.len()
            ));
        }
        let products = t0.list_all("product")?;
        if products.len() != PRODUCTS {
            problems.push(format!("{} products held, {PRODUCTS} expected", products.len()));
        }
        let (mut bad_stock, mut bad_price) = (Vec::new(), Vec::new());
        for e in &products {
            let Some(p) = e["id"].as_str().and_then(|s| s.strip_prefix('p')).and_then(|s| s.parse::<usize>().ok())
            else {
                continue;
            };
            if p >= PRODUCTS {
                continue;
            }
            let stock = e["fields"]["stock"].as_i64();
            if stock != Some(INITIAL_STOCK - self.model.sold[p]) {
                bad_stock.push(format!("{}: {stock:?} ≠ {}", product_id(p), INITIAL_STOCK - self.model.sold[p]));
            }
            let price = e["fields"]["price"].as_i64();
            if price != Some(self.model.price[p]) {
                bad_price.push(format!("{}: {price:?} ≠ {}", product_id(p), self.model.price[p]));
            }
        }
        if !bad_stock.is_empty() {
            problems.push(format!(
                "{} stock counters off: {}",
                bad_stock.len(),
                bad_stock.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if !bad_price.is_empty() {
            problems.push(format!(
                "{} prices off: {}",
                bad_price.len(),
                bad_price.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(problems)
    }
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<()> {
    let days = ctx.opts.year_days;
    if days < 2 {
        bail!("--year-days must be at least 2 (day 1 is the baseline)");
    }
    let replace_day = (days * 180 / 365).clamp(2, days);
    let started = Instant::now();
    let root = tempfile::tempdir()?;
    let ports = free_ports(TERMINALS)?;
    let tills = (0..TERMINALS)
        .map(|i| {
            let name = format!("year-t{i}");
            let peers = ports.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &p)| p).collect();
            Till::new(&name, ports[i], root.path().join(&name), peers)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rng = Rng::new(SEED);
    let price = (0..PRODUCTS).map(|_| 100 + rng.below(4900) as i64).collect();
    let mut st = Store {
        bin: ctx.server.clone(),
        root: root.path().to_path_buf(),
        tills,
        retired: BTreeSet::new(),
        model: Model { price, sold: vec![0; PRODUCTS], sales: BTreeSet::new() },
        rng,
        zipf: Zipf::new(PRODUCTS, ZIPF_S),
        stats: Stats::default(),
        day: 0,
    };
    eprintln!(
        "[year] {days} days; {TERMINALS} terminals on ports {ports:?}; {SALES_PER_DAY} sales/day of {LINES_PER_SALE} lines over {PRODUCTS} Zipf(s={ZIPF_S}) products; terminal 4 replaced on day {replace_day}"
    );

    // Day 0: the terminals start, pair (--peer) and receive the catalogue.
    for i in 0..TERMINALS {
        st.tills[i].start(&st.bin)?;
    }
    let t = Instant::now();
    for i in 0..TERMINALS {
        while st.tills[i].sync_now()?.peers < TERMINALS - 1 {
            if t.elapsed() > Duration::from_secs(60) {
                bail!("{} did not pair with its {} --peer within 60 s", st.tills[i].name, TERMINALS - 1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut ops = Vec::new();
    for p in 0..PRODUCTS {
        ops.push(json!({"op": "put", "type": "product", "id": product_id(p),
                        "fields": {"name": format!("Product {p:04}"), "price": st.model.price[p]}}));
        ops.push(
            json!({"op": "counter", "type": "product", "id": product_id(p), "field": "stock", "delta": INITIAL_STOCK}),
        );
    }
    st.tills[0].batch(json!({ "ops": ops }).to_string())?;
    st.converge()?;

    let mut first: Option<Snapshot> = None;
    let mut end: Option<Snapshot> = None;
    let (mut boot_first, mut boot_replace, mut boot_end) = (None, None, None);
    let mut max_open_conflicts = 0;
    let mut progress = Vec::new();
    // (day, restart s, sales s, sync s) at the last progress line.
    let mut window = (0, 0.0, 0.0, 0.0);
    for day in 1..=days {
        st.day = day;
        let measure = day == 2;
        if let Some(bytes) = st.restart_all(measure)? {
            if let Some(s) = first.as_mut() {
                s.dir_files = Some(bytes);
            }
        }
        let rate = if day == 1 || day == days { Some(st.sale_rate()?) } else { None };
        st.sales()?;
        let edited = st.price_edits()?;
        if day % CONFLICT_EVERY == 0 {
            let n = if day % (2 * CONFLICT_EVERY) == 0 { 2 } else { 1 };
            st.conflicts(n, &edited)?;
        }
        let open = st.converge()?;
        max_open_conflicts = max_open_conflicts.max(open);
        if day == replace_day {
            eprintln!("[year] day {day}: terminal 4 replaced by a fresh one on port {}", st.tills[TERMINALS - 1].port);
            let b = st.replace_last()?;
            eprintln!("[year]   bootstrap: {} records in {:.1} s for {} entities", b.pulled, b.secs, b.entities);
            boot_replace = Some(b);
            st.converge()?;
        }
        if day == 1 || day == days {
            let s = st.snapshot(rate.unwrap_or_default())?;
            let b = st.throwaway_bootstrap()?;
            eprintln!(
                "[year] day {day}: {} sales/s; {HOT}'s record {} bytes ({} writers); fresh terminal pulled {} records in {:.1} s for {} entities",
                num(s.sale_rate),
                num(s.hot_bytes as f64),
                s.hot_writers,
                num(b.pulled as f64),
                b.secs,
                num(b.entities as f64)
            );
            if day == 1 {
                first = Some(s);
                boot_first = Some(b);
            } else {
                end = Some(s);
                boot_end = Some(b);
            }
        }
        if day % 30 == 0 || day == days {
            let hot = hot_record(&st.tills[0].db())?.bytes;
            let elapsed = started.elapsed().as_secs_f64();
            let s = &st.stats;
            let n = f64::from(day - window.0);
            let (restart, sales, sync) =
                ((s.restart_s - window.1) / n, (s.sales_s - window.2) / n, (s.sync_s - window.3) / n);
            eprintln!(
                "[year] day {day}/{days}: {elapsed:.0} s; {HOT}'s record {} bytes; per day since day {}: restarts {restart:.2} s, sales {sales:.2} s, end-of-day sync {sync:.2} s; load average {}",
                num(hot as f64),
                window.0,
                super::load_average()
            );
            progress.push(json!({"day": day, "elapsed_s": elapsed, "hot_record_bytes": hot,
                                 "restarts_s_per_day": restart, "sales_s_per_day": sales,
                                 "sync_s_per_day": sync, "load_average": super::load_average()}));
            window = (day, s.restart_s, s.sales_s, s.sync_s);
        }
    }

    let problems = st.integrity()?;
    let mut end = end.context("no end-of-year snapshot")?;
    st.tills[0].stop()?;
    end.dir_files = Some(dir_files(&st.tills[0].dir)?);
    for t in &mut st.tills {
        t.stop()?;
    }
    let total_s = started.elapsed().as_secs_f64();
    let first = first.context("no day-1 snapshot")?;
    let (b1, brep, bend) = (
        boot_first.context("no day-1 bootstrap")?,
        boot_replace.context("no replacement bootstrap")?,
        boot_end.context("no end-of-year bootstrap")?,
    );
    let s = &st.stats;
    ctx.detail(
        "year",
        json!({
            "days": days, "terminals": TERMINALS, "products": PRODUCTS, "zipf_s": ZIPF_S,
            "sales_per_day": SALES_PER_DAY, "lines_per_sale": LINES_PER_SALE,
            "price_edits_per_day": PRICE_EDITS_PER_DAY, "rate_sales": RATE_SALES, "seed": SEED,
            "replace_day": replace_day, "total_s": total_s,
            "day1": first.json(), "end": end.json(),
            "bootstrap_day1": b1.json(), "bootstrap_replacement": brep.json(), "bootstrap_end": bend.json(),
            "restarts": s.restarts, "kills": s.kills, "restart_s": s.restart_s, "sales_s": s.sales_s,
            "price_edits_s": s.edits_s, "conflicts_s": s.conflicts_s, "end_of_day_sync_s": s.sync_s,
            "sync_rounds": s.sync_rounds, "extra_sync_rounds": s.extra_rounds, "pulled": s.pulled,
            "sync_errors_from_retired_devices": s.stale_errors, "sync_errors_other": s.other_errors,
            "first_sync_errors": s.first_errors, "first_sync_errors_from_retired_devices": s.first_stale_errors,
            "conflicts_made": s.conflicts_made, "conflicts_found_and_resolved": s.conflicts_found,
            "max_open_conflicts_after_sync": max_open_conflicts,
            "kill9_sales_in_flight": s.inflight_sent, "kill9_sales_acknowledged": s.inflight_acked,
            "kill9_sales_kept": s.inflight_kept, "kill9_acknowledged_sales_lost": s.lost_acked,
            "sales_expected": st.model.sales.len(), "integrity_problems": problems,
            "progress": progress,
        }),
    );

    let d = |s: &Snapshot| format!("day {}", s.day);
    ctx.push(
        Figure::new("year.sale_rate", end.sale_rate, "sales/s")
            .vs_rate(first.sale_rate, "sales/s", "on day 1")
            .target_ratio(1.25)
            .info(format!(
                "{}: median of {RATE_ROUNDS} rounds of {RATE_SALES} sequential single-line sales of {HOT} (the most popular product) to terminal 0 right after its daily restart; {HOT}'s version vector {}→{} writers; load average {} on day 1, {} then",
                d(&end),
                first.hot_writers,
                end.hot_writers,
                first.load,
                end.load
            )),
    );
    ctx.push(
        Figure::new("year.hot_record", end.hot_bytes as f64, "bytes")
            .vs_time(first.hot_bytes as f64, "bytes", "on day 1")
            .target_ratio(1.5)
            .info(format!(
                "{}: {HOT}'s latest change record in terminal 0's database, found by {}",
                d(&end),
                end.hot_how
            )),
    );
    let dir1 = first.dir_bytes().context("day-1 data dir not measured")? as f64;
    let dir_end = end.dir_bytes().context("end data dir not measured")? as f64;
    let per = |dir: f64, s: &Snapshot| dir / s.entities.max(1) as f64;
    ctx.push(
        Figure::new("year.disk_per_entity", per(dir_end, &end), "bytes/entity")
            .vs_time(per(dir1, &first), "bytes/entity", "on day 1")
            .info(format!(
                "terminal 0's data dir after a clean stop: {} bytes for {} live entities on {} ({} bytes for {} on day 1); tillmesh.db alone {} bytes/entity ({} on day 1)",
                num(dir_end),
                num(end.entities as f64),
                d(&end),
                num(dir1),
                num(first.entities as f64),
                num(end.db_bytes() as f64 / end.entities.max(1) as f64),
                num(first.db_bytes() as f64 / first.entities.max(1) as f64),
            )),
    );
    for (label, dir, snap) in [("day1", dir1, &first), ("end", dir_end, &end)] {
        ctx.push(
            Figure::new(&format!("year.disk_vs_json.{label}"), dir, "bytes")
                .vs_time(snap.json_bytes as f64, "bytes", "live entities as listed by GET /api/entities/{type}")
                .target_ratio(3.0)
                .info(format!(
                    "{}: terminal 0's data dir after a clean stop ({}) vs. its {} products and sales as JSON (fields alone {} bytes, version vectors {} bytes)",
                    d(snap),
                    snap.dir_files.as_ref().map(breakdown).unwrap_or_default(),
                    num(snap.entities as f64),
                    num(snap.fields_bytes as f64),
                    num(snap.version_bytes as f64)
                )),
        );
    }
    for (label, b) in [("day1", &b1), ("replacement", &brep), ("end", &bend)] {
        let what = match label {
            "day1" => "throwaway fresh terminal",
            "replacement" => "terminal 4 replaced (empty data dir, same port)",
            _ => "throwaway fresh terminal",
        };
        ctx.push(
            Figure::new(&format!("year.bootstrap_pulled.{label}"), b.pulled as f64, "records")
                .vs_time(b.entities as f64, "entities", "live entities")
                .target_ratio(1.2)
                .info(format!(
                    "day {}: {what}, --peer terminal 0 only, pulled {:.2} records per live entity",
                    b.day,
                    b.per_entity()
                )),
        );
    }
    for (label, b) in [("replacement", &brep), ("end", &bend)] {
        ctx.push(
            Figure::new(&format!("year.bootstrap_s.{label}"), b.secs, "s")
                .vs_time(b1.secs, "s", "day-1 bootstrap of a fresh terminal")
                .info(format!(
                    "day {}: start of the process to digest equal to terminal 0's, {} entities ({} on day 1), {} sync/now calls",
                    b.day,
                    num(b.entities as f64),
                    num(b1.entities as f64),
                    b.calls
                )),
        );
    }
    ctx.push(
        Figure::new("year.sync_throughput", bend.rate(), "records/s")
            .vs_rate(b1.rate(), "records/s", "day-1 bootstrap")
            .info(format!(
                "records pulled per second inside sync/now by a fresh terminal on day {} ({} records in {:.1} s); replacement on day {}: {} records/s",
                bend.day,
                num(bend.pulled as f64),
                bend.sync_secs,
                brep.day,
                num(brep.rate())
            )),
    );
    eprintln!(
        "[year] {days} days in {total_s:.0} s: {} restarts ({} kill -9; in-flight sales acknowledged {}, kept {}), {} sync rounds (+{} extra), sync errors: {} from retired devices, {} other; conflicts made {}, found and resolved {}",
        s.restarts, s.kills, s.inflight_acked, s.inflight_kept, s.sync_rounds, s.extra_rounds, s.stale_errors, s.other_errors, s.conflicts_made, s.conflicts_found
    );
    if !s.lost_acked.is_empty() || !problems.is_empty() {
        bail!("the store lost data: {}", s.lost_acked.iter().chain(&problems).cloned().collect::<Vec<_>>().join("; "));
    }
    Ok(())
}
