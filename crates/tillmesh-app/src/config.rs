//! Configuration: every flag of the API contract, each with its `TILLMESH_*`
//! environment variable (clap), validated at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Whether to use mDNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryMode {
    /// Advertise and browse `_tillmesh._tcp.local.`.
    Mdns,
    /// Only manual pairing and `--peer`.
    Off,
}

/// A checkout terminal of the tillmesh store mesh.
#[derive(Clone, Debug, Parser)]
#[command(name = "terminal-server", version, about)]
pub struct Config {
    /// SQLite database and generated secrets live here.
    #[arg(long, env = "TILLMESH_DATA_DIR", default_value = "./tillmesh-data")]
    pub data_dir: PathBuf,
    /// HTTP listen address; port 0 = any free port.
    #[arg(long, env = "TILLMESH_LISTEN", default_value = "0.0.0.0:7700")]
    pub listen: SocketAddr,
    /// Human name of the terminal (default: host name).
    #[arg(long, env = "TILLMESH_NAME")]
    pub name: Option<String>,
    /// `off` = only manual pairing / `--peer`.
    #[arg(long, env = "TILLMESH_DISCOVERY", value_enum, default_value = "mdns")]
    pub discovery: DiscoveryMode,
    /// Peers to add at start-up (`HOST:PORT` or `http://HOST:PORT`), as manual pairing does.
    #[arg(long = "peer", env = "TILLMESH_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Shared secret of the store's terminals (default: generated, kept in the data dir).
    #[arg(long, env = "TILLMESH_STORE_KEY", hide_env_values = true)]
    pub store_key: Option<String>,
    /// Bearer token of the management API (default: generated, kept in the data dir).
    #[arg(long, env = "TILLMESH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Let the admin token be used from other machines. Off by default: the API is plain
    /// HTTP, so the admin token would cross the network in clear; without this flag it
    /// is only accepted from this machine (loopback), and the app token from anywhere.
    #[arg(long, env = "TILLMESH_REMOTE_ADMIN")]
    pub remote_admin: bool,
    /// Bearer token for till apps: entities, events and the API description only
    /// (default: generated, kept in the data dir as `app-token`).
    #[arg(long, env = "TILLMESH_APP_TOKEN", hide_env_values = true)]
    pub app_token: Option<String>,
    /// Seconds between background syncs with every online trusted peer.
    #[arg(long, env = "TILLMESH_SYNC_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub sync_interval: u64,
    /// Seconds between device freshness checks.
    #[arg(long, env = "TILLMESH_HEARTBEAT_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub heartbeat_interval: u64,
    /// Seconds of silence after which a device is `offline`.
    #[arg(long, env = "TILLMESH_OFFLINE_AFTER", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=864_000))]
    pub offline_after: u64,
    /// Restrict mDNS to these interfaces (repeatable).
    #[arg(long = "mdns-interface", env = "TILLMESH_MDNS_INTERFACES", value_delimiter = ',')]
    pub mdns_interfaces: Vec<String>,
    /// Offline-queue attempts before an operation is `failed`.
    #[arg(long, env = "TILLMESH_MAX_RETRIES", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_retries: u32,
    /// First retry delay in ms; doubles each attempt, with jitter.
    #[arg(long, env = "TILLMESH_RETRY_BASE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub retry_base_ms: u64,
    /// Cap on one retry delay in ms.
    #[arg(long, env = "TILLMESH_RETRY_MAX_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub retry_max_ms: u64,
    /// Head-office endpoint: each new `sale` is forwarded there through the offline queue.
    #[arg(long, env = "TILLMESH_UPSTREAM", value_parser = parse_http_url)]
    pub upstream: Option<String>,
    /// Changes per sync batch (at most 1000).
    #[arg(long, env = "TILLMESH_SYNC_BATCH_SIZE", default_value_t = tillmesh_domain::wire::SYNC_BATCH_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub sync_batch_size: u64,
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{s:?} must be an http(s) URL with a host"));
    }
    Ok(s.to_string())
}

/// Turns `HOST:PORT`, `http://HOST:PORT` or `http://HOST:PORT/` into a base URL.
///
/// # Errors
/// A message naming the bad address.
pub fn peer_base_url(address: &str) -> Result<String, String> {
    let a = address.trim();
    let with_scheme =
        if a.starts_with("http://") || a.starts_with("https://") { a.to_string() } else { format!("http://{a}") };
    let u = reqwest::Url::parse(&with_scheme).map_err(|e| format!("{address:?} is not HOST:PORT: {e}"))?;
    let host = u.host_str().ok_or_else(|| format!("{address:?} has no host"))?;
    if u.path() != "/" || u.query().is_some() {
        return Err(format!("{address:?} must be HOST:PORT without a path"));
    }
    let port = u.port_or_known_default().ok_or_else(|| format!("{address:?} has no port"))?;
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    Ok(format!("{}://{host}:{port}", u.scheme()))
}

/// Base URL of a device at `host` (name, IPv4 or IPv6) and `port`.
pub fn base_url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

impl Config {
    /// The terminal's name: `--name`, else the host name, else `terminal`.
    pub fn terminal_name(&self) -> String {
        self.name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "terminal".into())
    }

    /// Sync period.
    pub fn sync_period(&self) -> Duration {
        Duration::from_secs(self.sync_interval)
    }

    /// Validation clap cannot express. Returns a one-line message.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), String> {
        for p in &self.peers {
            peer_base_url(p).map_err(|e| format!("--peer: {e}"))?;
        }
        if self.retry_max_ms < self.retry_base_ms {
            return Err(format!(
                "--retry-max-ms ({}) must be at least --retry-base-ms ({})",
                self.retry_max_ms, self.retry_base_ms
            ));
        }
        if self.offline_after < self.heartbeat_interval {
            return Err(format!(
                "--offline-after ({}) must be at least --heartbeat-interval ({})",
                self.offline_after, self.heartbeat_interval
            ));
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 16 {
                return Err("--admin-token must be at least 16 characters".into());
            }
        }
        if let Some(t) = &self.app_token {
            if t.len() < 16 {
                return Err("--app-token must be at least 16 characters".into());
            }
            if self.admin_token.as_deref() == Some(t.as_str()) {
                return Err("--app-token must differ from --admin-token".into());
            }
        }
        if let Some(k) = &self.store_key {
            if k.len() < 16 {
                return Err("--store-key must be at least 16 characters".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_become_base_urls() {
        assert_eq!(peer_base_url("10.0.0.2:7700").as_deref(), Ok("http://10.0.0.2:7700"));
        assert_eq!(peer_base_url("http://till-2.local:80/").as_deref(), Ok("http://till-2.local:80"));
        assert!(peer_base_url("10.0.0.2:7700/x").is_err());
        assert!(peer_base_url("not a host:").is_err());
    }

    #[test]
    fn unknown_discovery_modes_are_rejected() {
        let err = Config::try_parse_from(["t", "--discovery", "bonjour"]).expect_err("bad mode");
        assert_eq!(err.exit_code(), 2);
    }
}
