//! The device registry: this terminal, peers found by mDNS and peers paired by hand;
//! the heartbeat that keeps their freshness and reports online/offline transitions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tillmesh_domain::device::{DeviceRecord, DeviceSource};
use tillmesh_domain::ports::{
    Clock, DiscoveryEvent, DiscoverySink, PeerTransport, Store, StoreError, TransportError,
};
use tillmesh_domain::wire::HelloV1;
use tillmesh_domain::{DeviceId, LivenessPolicy, LivenessStatus, Timestamp};

use crate::config::{base_url, peer_base_url};
use crate::events::{EventBus, EventKind};

/// A device with its current liveness.
#[derive(Clone, Debug)]
pub struct DeviceView {
    /// Registry entry.
    pub record: DeviceRecord,
    /// Liveness now.
    pub status: LivenessStatus,
}

/// Why pairing failed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The address is not `HOST:PORT`.
    #[error("{0}")]
    BadAddress(String),
    /// Nothing answers there.
    #[error("no terminal answers at {0}: {1}")]
    Unreachable(String, String),
    /// Something answers that is not a tillmesh terminal of this store.
    #[error("{0}")]
    Foreign(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Registry and heartbeat.
pub struct NetworkService {
    me: DeviceId,
    store_id: String,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn PeerTransport>,
    events: EventBus,
    liveness: LivenessPolicy,
    last_status: Mutex<HashMap<DeviceId, LivenessStatus>>,
}

impl NetworkService {
    /// Wires the service.
    pub fn new(
        me: DeviceId,
        store_id: String,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn PeerTransport>,
        events: EventBus,
        liveness: LivenessPolicy,
    ) -> Self {
        Self {
            me,
            store_id,
            store,
            clock,
            transport,
            events,
            liveness,
            last_status: Mutex::new(HashMap::new()),
        }
    }

    /// This terminal's id.
    pub fn device_id(&self) -> &DeviceId {
        &self.me
    }

    /// Registers this terminal itself.
    ///
    /// # Errors
    /// Store errors.
    pub async fn register_self(
        &self,
        name: &str,
        address: &str,
        port: u16,
    ) -> Result<(), StoreError> {
        self.store
            .upsert_device(DeviceRecord {
                device_id: self.me.clone(),
                name: name.to_string(),
                address: address.to_string(),
                port,
                last_seen: self.clock.now(),
                source: DeviceSource::Local,
                trusted: true,
            })
            .await
    }

    /// Every known device with its liveness now (this terminal is always online).
    ///
    /// # Errors
    /// Store errors.
    pub async fn devices(&self) -> Result<Vec<DeviceView>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .store
            .devices()
            .await?
            .into_iter()
            .map(|record| {
                let status = if record.device_id == self.me {
                    LivenessStatus::Online
                } else {
                    self.liveness.status(record.last_seen, now)
                };
                DeviceView { record, status }
            })
            .collect())
    }

    /// Peers to sync with: trusted, not offline, not this terminal.
    ///
    /// # Errors
    /// Store errors.
    pub async fn sync_peers(&self) -> Result<Vec<DeviceView>, StoreError> {
        Ok(self
            .devices()
            .await?
            .into_iter()
            .filter(|d| {
                d.record.device_id != self.me
                    && d.record.trusted
                    && d.status != LivenessStatus::Offline
            })
            .collect())
    }

    /// Pairs with the terminal at `address` (manual pairing and `--peer`).
    ///
    /// # Errors
    /// [`PairError`] saying why the address is not a terminal of this store.
    pub async fn pair(&self, address: &str) -> Result<DeviceRecord, PairError> {
        let base = peer_base_url(address).map_err(PairError::BadAddress)?;
        let hello = match self.transport.hello(&base).await {
            Ok(h) => h,
            Err(TransportError::Unreachable(e)) => return Err(PairError::Unreachable(base, e)),
            Err(e) => {
                return Err(PairError::Foreign(format!(
                    "{base} is not a tillmesh terminal: {e}"
                )))
            }
        };
        if hello.device_id == self.me {
            return Err(PairError::Foreign(format!(
                "{base} is this terminal itself"
            )));
        }
        if hello.store_id != self.store_id {
            return Err(PairError::Foreign(format!(
                "{base} is a tillmesh terminal of another store ({}); pair it with this store's key first",
                hello.store_id
            )));
        }
        let (host, port) = split_base(&base);
        let record = DeviceRecord {
            device_id: hello.device_id.clone(),
            name: hello.name.clone(),
            address: host,
            port,
            last_seen: self.clock.now(),
            source: DeviceSource::Manual,
            trusted: true,
        };
        self.store.upsert_device(record.clone()).await?;
        self.note_status(&record.device_id, &record.name, LivenessStatus::Online);
        Ok(record)
    }

    /// Handles a peer announced by discovery: confirms it answers the protocol on one
    /// of its addresses and records it (trusted only when it belongs to this store).
    pub async fn on_discovered(&self, event: DiscoveryEvent) {
        let DiscoveryEvent::Found {
            device_id,
            name,
            addresses,
            port,
            ..
        } = event
        else {
            return;
        };
        if device_id == self.me {
            return;
        }
        for addr in addresses {
            let base = base_url(&addr, port);
            match self.transport.hello(&base).await {
                Ok(hello) if hello.device_id == device_id => {
                    let trusted = hello.store_id == self.store_id;
                    let record = DeviceRecord {
                        device_id: device_id.clone(),
                        name: if hello.name.is_empty() {
                            name.clone()
                        } else {
                            hello.name.clone()
                        },
                        address: addr.clone(),
                        port,
                        last_seen: self.clock.now(),
                        source: DeviceSource::Mdns,
                        trusted,
                    };
                    if let Err(e) = self.store.upsert_device(record).await {
                        tracing::error!(error = %e, "could not record discovered device");
                    }
                    tracing::info!(device = %device_id, %base, trusted, "discovered terminal");
                    self.note_status(&device_id, &name, LivenessStatus::Online);
                    return;
                }
                Ok(_) => tracing::warn!(%base, "address answers with another device id"),
                Err(e) => tracing::debug!(%base, error = %e, "discovered address does not answer"),
            }
        }
        tracing::warn!(device = %device_id, "discovered terminal answers on none of its addresses");
    }

    /// Records that `peer` answered (sync or ping).
    pub async fn touch(&self, peer: &DeviceId) {
        let _ = self.store.touch_device(peer, self.clock.now()).await;
    }

    /// One heartbeat: pings every known peer, refreshes last-seen of those that
    /// answer, and emits online/offline transitions.
    pub async fn heartbeat(&self) {
        let Ok(devices) = self.store.devices().await else {
            return;
        };
        let pings = devices
            .iter()
            .filter(|d| d.device_id != self.me)
            .map(|d| async move {
                let base = base_url(&d.address, d.port);
                (d, self.transport.hello(&base).await)
            });
        for (d, result) in futures::future::join_all(pings).await {
            if let Ok(HelloV1 { device_id, .. }) = result {
                if device_id == d.device_id {
                    self.touch(&d.device_id).await;
                }
            }
        }
        self.refresh_statuses().await;
    }

    /// Compares liveness with the last known and emits transitions.
    pub async fn refresh_statuses(&self) {
        let Ok(devices) = self.devices().await else {
            return;
        };
        for d in devices.iter().filter(|d| d.record.device_id != self.me) {
            self.note_status(&d.record.device_id, &d.record.name, d.status);
        }
    }

    fn note_status(&self, id: &DeviceId, name: &str, status: LivenessStatus) {
        let previous = {
            let Ok(mut map) = self.last_status.lock() else {
                return;
            };
            map.insert(id.clone(), status)
        };
        match (
            previous.map(|p| p != LivenessStatus::Offline),
            status != LivenessStatus::Offline,
        ) {
            (None | Some(false), true) => {
                self.events.publish(
                    EventKind::DeviceOnline,
                    json!({"device_id": id, "name": name}),
                );
            }
            (Some(true), false) => {
                self.events.publish(
                    EventKind::DeviceOffline,
                    json!({"device_id": id, "name": name}),
                );
            }
            _ => {}
        }
    }

    /// Runs the heartbeat every `period` until dropped.
    pub async fn run_heartbeat(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.heartbeat().await;
        }
    }

    /// When a device was last heard of, for tests and the dashboard.
    ///
    /// # Errors
    /// Store errors.
    pub async fn last_seen(&self, id: &DeviceId) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.store.device(id).await?.map(|d| d.last_seen))
    }
}

fn split_base(base: &str) -> (String, u16) {
    let rest = base.split("://").nth(1).unwrap_or(base);
    match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(80),
        ),
        None => (rest.to_string(), 80),
    }
}

/// Forwards discovery events into the network service without blocking the
/// discovery adapter's thread.
pub struct DiscoveryBridge {
    /// The service events go to.
    pub network: Arc<NetworkService>,
    /// Runtime to spawn handling on.
    pub runtime: tokio::runtime::Handle,
}

impl DiscoverySink for DiscoveryBridge {
    fn on_event(&self, event: DiscoveryEvent) {
        let network = self.network.clone();
        self.runtime
            .spawn(async move { network.on_discovered(event).await });
    }
}
