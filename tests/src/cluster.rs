//! The in-process many-terminal harness: N terminals in one process, each with its
//! own SQLite file and a real HTTP server on 127.0.0.1:0, syncing over real HTTP.

use std::sync::Arc;

use anyhow::Result;
use tillmesh_app::{Config, Terminal};

use crate::{ADMIN_TOKEN, STORE_KEY};

/// A set of in-process terminals.
pub struct Cluster {
    /// The terminals, index = terminal number.
    pub terminals: Vec<Terminal>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` terminals (mDNS off, background sync effectively off so tests drive
    /// sync rounds themselves).
    ///
    /// # Errors
    /// Start-up failures.
    pub async fn spawn(n: usize) -> Result<Self> {
        let mut terminals = Vec::with_capacity(n);
        let mut dirs = Vec::with_capacity(n);
        for i in 0..n {
            let dir = tempfile::tempdir()?;
            let config = Config {
                data_dir: dir.path().to_path_buf(),
                listen: "127.0.0.1:0".parse()?,
                name: Some(format!("till-{i}")),
                discovery: tillmesh_app::DiscoveryMode::Off,
                peers: vec![],
                store_key: Some(STORE_KEY.into()),
                admin_token: Some(ADMIN_TOKEN.into()),
                sync_interval: 86_400,
                heartbeat_interval: 3_600,
                offline_after: 86_400,
                mdns_interfaces: vec![],
                max_retries: 3,
                retry_base_ms: 10,
                retry_max_ms: 100,
                upstream: None,
                sync_batch_size: 100,
            };
            terminals.push(Terminal::start(config).await?);
            dirs.push(dir);
        }
        Ok(Self { terminals, _dirs: dirs })
    }

    /// Terminal `i`'s `HOST:PORT`.
    pub fn address(&self, i: usize) -> String {
        self.terminals[i].addr.to_string()
    }

    /// Makes terminal `a` know terminal `b` (one direction: `a` pulls from `b`).
    ///
    /// # Errors
    /// Pairing failures.
    pub async fn link(&self, a: usize, b: usize) -> Result<()> {
        self.terminals[a].state.network.pair(&self.address(b)).await?;
        Ok(())
    }

    /// One sync round of terminal `i` with every peer it knows.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sync(&self, i: usize) -> Result<u64> {
        let results = self.terminals[i].state.sync.sync_round().await?;
        Ok(results.iter().map(|r| r.pulled).sum())
    }

    /// The digests of all terminals.
    ///
    /// # Errors
    /// Store failures.
    pub async fn digests(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for t in &self.terminals {
            out.push(t.state.store.digest().await?.digest.to_hex());
        }
        Ok(out)
    }

    /// Shared state of terminal `i`.
    pub fn state(&self, i: usize) -> Arc<tillmesh_app::http::AppState> {
        self.terminals[i].state.clone()
    }

    /// Stops every terminal.
    pub async fn shutdown(self) {
        for t in self.terminals {
            t.shutdown().await;
        }
    }
}
