//! The in-process many-terminal harness: N complete terminals in one process (real
//! services, SQLite files in temp dirs, real HTTP servers on 127.0.0.1:0), whose peer
//! transport goes through [`FaultyTransport`]: controllable partitions, message loss,
//! duplication and reordering, driven by a seeded random generator. Any terminal can
//! be crashed and restarted on its data dir.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tillmesh_app::{Config, StartHooks, Terminal};
use tillmesh_domain::ports::{Clock, PeerTransport, TransportError};
use tillmesh_domain::wire::{HelloV1, PullRequestV1, PullResponseV1};
use tillmesh_domain::DeviceId;

use crate::{ADMIN_TOKEN, STORE_KEY};

/// Network conditions shared by every terminal of a cluster.
pub struct Faults {
    /// Partition group of each terminal (by port); terminals talk only within a group.
    groups: HashMap<u16, usize>,
    /// Probability that a pull's response is lost after the server sent it.
    pub loss: f64,
    /// Probability that every change of a response is delivered twice.
    pub duplication: f64,
    /// Probability that a response's changes arrive shuffled.
    pub reordering: f64,
    rng: SmallRng,
}

impl Faults {
    fn new(seed: u64) -> Self {
        Self {
            groups: HashMap::new(),
            loss: 0.0,
            duplication: 0.0,
            reordering: 0.0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    fn connected(&self, a: u16, b: u16) -> bool {
        self.groups.get(&a).unwrap_or(&0) == self.groups.get(&b).unwrap_or(&0)
    }
}

/// Wraps a terminal's real transport with the cluster's [`Faults`].
pub struct FaultyTransport {
    inner: Arc<dyn PeerTransport>,
    own_port: Arc<Mutex<u16>>,
    faults: Arc<Mutex<Faults>>,
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

impl FaultyTransport {
    fn check_link(&self, base: &str) -> Result<(), TransportError> {
        let me = *self.own_port.lock().map_err(|_| TransportError::Unreachable("poisoned".into()))?;
        let f = self.faults.lock().map_err(|_| TransportError::Unreachable("poisoned".into()))?;
        if f.connected(me, port_of(base)) {
            Ok(())
        } else {
            Err(TransportError::Unreachable(format!("partitioned from {base}")))
        }
    }
}

#[async_trait]
impl PeerTransport for FaultyTransport {
    async fn hello(&self, base: &str) -> Result<HelloV1, TransportError> {
        self.check_link(base)?;
        self.inner.hello(base).await
    }

    async fn pull(&self, base: &str, req: &PullRequestV1) -> Result<PullResponseV1, TransportError> {
        self.check_link(base)?;
        let mut resp = self.inner.pull(base, req).await?;
        let mut f = self.faults.lock().map_err(|_| TransportError::Unreachable("poisoned".into()))?;
        let (loss, dup, reorder) = (f.loss, f.duplication, f.reordering);
        if f.rng.gen_bool(loss) {
            return Err(TransportError::Unreachable("response lost".into()));
        }
        if f.rng.gen_bool(dup) {
            let copy = resp.changes.clone();
            resp.changes.extend(copy);
        }
        if f.rng.gen_bool(reorder) {
            resp.changes.shuffle(&mut f.rng);
        }
        Ok(resp)
    }

    async fn verify_membership(&self, base: &str) -> Result<DeviceId, TransportError> {
        self.check_link(base)?;
        self.inner.verify_membership(base).await
    }
}

struct Slot {
    terminal: Option<Terminal>,
    clock: Option<Arc<dyn Clock>>,
    config: Config,
    own_port: Arc<Mutex<u16>>,
    _dir: tempfile::TempDir,
}

/// A set of in-process terminals.
pub struct Cluster {
    slots: Vec<Slot>,
    faults: Arc<Mutex<Faults>>,
    /// Seed of the fault generator (printed so failures can be replayed).
    pub seed: u64,
}

/// The configuration of harness terminal `i`: mDNS off, the test store key and admin
/// token, background sync and heartbeat effectively off, fast retries.
///
/// # Errors
/// Never in practice (parses a constant address).
pub fn config_for(dir: &std::path::Path, i: usize) -> Result<Config> {
    Ok(Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        name: Some(format!("till-{i}")),
        discovery: tillmesh_app::DiscoveryMode::Off,
        peers: vec![],
        store_key: Some(STORE_KEY.into()),
        admin_token: Some(ADMIN_TOKEN.into()),
        app_token: None,
        remote_admin: false,
        // Tests drive sync rounds themselves.
        sync_interval: 86_400,
        heartbeat_interval: 3_600,
        offline_after: 86_400,
        mdns_interfaces: vec![],
        max_retries: 3,
        retry_base_ms: 10,
        retry_max_ms: 100,
        upstream: None,
        sync_batch_size: 100,
    })
}

impl Cluster {
    /// Starts `n` terminals with a fault generator seeded by `TILLMESH_SEED` or 1.
    ///
    /// # Errors
    /// Start-up failures.
    pub async fn spawn(n: usize) -> Result<Self> {
        let seed = std::env::var("TILLMESH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        Self::spawn_seeded(n, seed).await
    }

    /// Starts `n` terminals with the given seed.
    ///
    /// # Errors
    /// Start-up failures.
    pub async fn spawn_seeded(n: usize, seed: u64) -> Result<Self> {
        Self::spawn_full(n, seed, Vec::new()).await
    }

    /// Starts `n` terminals sharing one (manual) clock.
    ///
    /// # Errors
    /// Start-up failures.
    pub async fn spawn_with_clock(n: usize, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::spawn_full(n, 1, vec![Some(clock); n]).await
    }

    /// Starts one terminal per clock, each reading its own (e.g. skewed) clock.
    ///
    /// # Errors
    /// Start-up failures.
    pub async fn spawn_with_clocks(clocks: Vec<Arc<dyn Clock>>) -> Result<Self> {
        Self::spawn_full(clocks.len(), 1, clocks.into_iter().map(Some).collect()).await
    }

    async fn spawn_full(n: usize, seed: u64, clocks: Vec<Option<Arc<dyn Clock>>>) -> Result<Self> {
        let faults = Arc::new(Mutex::new(Faults::new(seed)));
        let mut cluster = Self { slots: Vec::with_capacity(n), faults, seed };
        for i in 0..n {
            let dir = tempfile::tempdir()?;
            let config = config_for(dir.path(), i)?;
            let clock = clocks.get(i).cloned().flatten();
            cluster.slots.push(Slot { terminal: None, config, own_port: Arc::new(Mutex::new(0)), clock, _dir: dir });
            cluster.boot(i).await?;
        }
        Ok(cluster)
    }

    async fn boot(&mut self, i: usize) -> Result<()> {
        let slot = &mut self.slots[i];
        let (faults, own_port) = (self.faults.clone(), slot.own_port.clone());
        let hooks = StartHooks {
            wrap_transport: Some(Box::new(move |inner| {
                Arc::new(FaultyTransport { inner, own_port, faults }) as Arc<dyn PeerTransport>
            })),
            clock: slot.clock.clone(),
        };
        let t = Terminal::start_with(slot.config.clone(), hooks).await?;
        *slot.own_port.lock().map_err(|_| anyhow!("poisoned"))? = t.addr.port();
        // Restarts keep the port, so peers' registry entries stay valid.
        slot.config.listen = t.addr;
        slot.terminal = Some(t);
        Ok(())
    }

    /// Number of terminals.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cluster is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Terminal `i` (panics if it is crashed: a harness usage error).
    pub fn terminal(&self, i: usize) -> &Terminal {
        self.slots[i].terminal.as_ref().expect("terminal is running")
    }

    /// Terminal `i`'s `HOST:PORT`.
    pub fn address(&self, i: usize) -> String {
        self.slots[i].config.listen.to_string()
    }

    /// Makes terminal `a` know terminal `b` (`a` pulls from `b`).
    ///
    /// # Errors
    /// Pairing failures.
    pub async fn link(&self, a: usize, b: usize) -> Result<()> {
        self.terminal(a).state.network.pair(&self.address(b)).await?;
        Ok(())
    }

    /// Links every pair both ways.
    ///
    /// # Errors
    /// Pairing failures.
    pub async fn link_all(&self) -> Result<()> {
        for a in 0..self.len() {
            for b in 0..self.len() {
                if a != b {
                    self.link(a, b).await?;
                }
            }
        }
        Ok(())
    }

    /// Splits terminals into partitions: `groups[i]` is terminal i's group.
    pub fn partition(&self, groups: &[usize]) {
        if let Ok(mut f) = self.faults.lock() {
            f.groups = self.slots.iter().zip(groups).map(|(s, g)| (s.config.listen.port(), *g)).collect();
        }
    }

    /// Removes all partitions.
    pub fn heal(&self) {
        if let Ok(mut f) = self.faults.lock() {
            f.groups.clear();
        }
    }

    /// Sets message loss, duplication and reordering probabilities.
    pub fn set_faults(&self, loss: f64, duplication: f64, reordering: f64) {
        if let Ok(mut f) = self.faults.lock() {
            (f.loss, f.duplication, f.reordering) = (loss, duplication, reordering);
        }
    }

    /// One sync round of terminal `i` with every peer it knows; changes pulled.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sync(&self, i: usize) -> Result<u64> {
        let results = self.terminal(i).state.sync.sync_round().await?;
        Ok(results.iter().map(|r| r.pulled).sum())
    }

    /// One round: every running terminal syncs once, concurrently; changes pulled.
    ///
    /// # Errors
    /// Store failures.
    pub async fn round(&self) -> Result<u64> {
        let runs = (0..self.len()).filter(|i| self.slots[*i].terminal.is_some()).map(|i| self.sync(i));
        let mut total = 0;
        for r in futures::future::join_all(runs).await {
            total += r?;
        }
        Ok(total)
    }

    /// Runs rounds until every digest is equal; returns the rounds needed.
    ///
    /// # Errors
    /// If they do not converge within `max_rounds`.
    pub async fn converge(&self, max_rounds: usize) -> Result<usize> {
        for r in 1..=max_rounds {
            self.round().await?;
            if self.converged().await? {
                return Ok(r);
            }
        }
        Err(anyhow!("no convergence after {max_rounds} rounds (seed {})", self.seed))
    }

    /// Whether all running terminals have the same digest.
    ///
    /// # Errors
    /// Store failures.
    pub async fn converged(&self) -> Result<bool> {
        let d = self.digests().await?;
        Ok(d.windows(2).all(|w| w[0] == w[1]))
    }

    /// The digests of all running terminals.
    ///
    /// # Errors
    /// Store failures.
    pub async fn digests(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for s in self.slots.iter().filter_map(|s| s.terminal.as_ref()) {
            out.push(s.state.store.digest().await?.digest.to_hex());
        }
        Ok(out)
    }

    /// Shared state of terminal `i`.
    pub fn state(&self, i: usize) -> Arc<tillmesh_app::http::AppState> {
        self.terminal(i).state.clone()
    }

    /// Stops terminal `i` abruptly (its in-flight work is dropped).
    pub async fn crash(&mut self, i: usize) {
        if let Some(t) = self.slots[i].terminal.take() {
            t.shutdown().await;
        }
    }

    /// Restarts a crashed terminal on its data dir and port.
    ///
    /// # Errors
    /// Start-up failures.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.crash(i).await;
        self.boot(i).await
    }

    /// Stops every terminal.
    pub async fn shutdown(self) {
        for s in self.slots {
            if let Some(t) = s.terminal {
                t.shutdown().await;
            }
        }
    }
}
