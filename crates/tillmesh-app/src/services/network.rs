//! The device registry: this terminal, peers found by mDNS and peers paired by hand;
//! the heartbeat that keeps their freshness and reports online/offline transitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use tillmesh_domain::device::{DeviceRecord, DeviceSource};
use tillmesh_domain::ports::{Clock, DiscoveryEvent, DiscoverySink, PeerTransport, Store, StoreError, TransportError};
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
    // Replaced when this terminal joins a store with a pairing code.
    store_id: std::sync::RwLock<String>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn PeerTransport>,
    events: EventBus,
    liveness: LivenessPolicy,
    last_status: Mutex<HashMap<DeviceId, LivenessStatus>>,
    /// When each peer's last-seen was last written (see [`NetworkService::touch`]).
    last_touch: Mutex<HashMap<DeviceId, Timestamp>>,
    /// Numbers discovery events in the order the adapter reported them.
    discovery_seq: AtomicU64,
    discovery: Mutex<DiscoveryState>,
    /// Serialises "is this Found still the newest? → record it".
    discovery_writes: tokio::sync::Mutex<()>,
    /// When each address learned from a peer (a puller, or a member list) was last
    /// tried, so that one that does not answer is not dialled at every sync.
    learning: Mutex<HashMap<String, Instant>>,
}

/// Shortest interval between two attempts to pair with one learned address.
const LEARN_EVERY: Duration = Duration::from_secs(60);

/// Shortest interval between two writes of one peer's last-seen by [`NetworkService::touch`].
const TOUCH_EVERY: Duration = Duration::from_millis(500);

/// Repeated `Found` events with the same addresses within this period are skipped.
const FOUND_DEBOUNCE: Duration = Duration::from_secs(2);

/// What discovery told about each peer, beyond the registry.
#[derive(Default)]
struct DiscoveryState {
    /// Sequence number of the last `Found` recorded per device.
    recorded: HashMap<DeviceId, u64>,
    /// Address set and port last handled per device, and when (debounce).
    recent: HashMap<DeviceId, (Vec<String>, u16, Instant)>,
    /// Devices that withdrew their advertisement (mDNS goodbye or expiry).
    withdrawn: HashMap<DeviceId, Withdrawal>,
}

/// A `Lost` event: the device counts as offline until it is found again, paired again,
/// or heard from after the offline threshold has passed since (a terminal still
/// answers for a moment after its goodbye while it shuts down).
#[derive(Clone, Copy)]
struct Withdrawal {
    seq: u64,
    at: Timestamp,
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
            store_id: std::sync::RwLock::new(store_id),
            store,
            clock,
            transport,
            events,
            liveness,
            last_status: Mutex::new(HashMap::new()),
            last_touch: Mutex::new(HashMap::new()),
            discovery_seq: AtomicU64::new(0),
            discovery: Mutex::new(DiscoveryState::default()),
            discovery_writes: tokio::sync::Mutex::new(()),
            learning: Mutex::new(HashMap::new()),
        }
    }

    /// A peer told of `device` at `address:port`: a puller that gave its port (pairing
    /// back, so pairing on either side makes both sides sync), or a member list
    /// (gossip, so one pairing joins the whole store). Unless that device is already
    /// trusted at that address, pairs with it in the background — which trusts it
    /// only if its own store-key handshake succeeds, like manual pairing.
    pub async fn learn(self: &Arc<Self>, device: &DeviceId, address: &str, port: u16) {
        if device == &self.me || port == 0 {
            return;
        }
        if let Ok(Some(known)) = self.store.device(device).await {
            if known.trusted && known.address == address && known.port == port {
                return;
            }
        }
        self.pair_learned(address, port);
    }

    /// [`NetworkService::learn`] for a peer's member list, reading the registry once:
    /// a list comes with every sync that reaches a peer's head, and is almost always
    /// known already.
    pub async fn learn_members(self: &Arc<Self>, members: Vec<tillmesh_domain::wire::MemberV1>) {
        if members.is_empty() {
            return;
        }
        let known = self.store.devices().await.unwrap_or_default();
        for m in members {
            let trusted_there = known
                .iter()
                .any(|d| d.device_id == m.device_id && d.trusted && d.address == m.address && d.port == m.port);
            if m.device_id != self.me && m.port != 0 && !trusted_there {
                self.pair_learned(&m.address, m.port);
            }
        }
    }

    /// Pairs with a learned `address:port` in the background (at most once a minute per
    /// address), recording it as learned from a peer.
    fn pair_learned(self: &Arc<Self>, address: &str, port: u16) {
        let target = match address.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{address}:{port}"),
        };
        {
            let mut tried = self.learning.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if tried.get(&target).is_some_and(|at| now.duration_since(*at) < LEARN_EVERY) {
                return;
            }
            tried.retain(|_, at| now.duration_since(*at) < LEARN_EVERY);
            tried.insert(target.clone(), now);
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            match this.pair_as(&target, DeviceSource::Peer).await {
                Ok(d) => tracing::info!(device = %d.device_id, %target, "paired with a member a peer told of"),
                Err(e) => tracing::debug!(%target, error = %e, "could not pair with a member a peer told of"),
            }
        });
    }

    /// The trusted members other than this terminal and `except`, as told to peers.
    ///
    /// # Errors
    /// Store errors.
    pub async fn members(&self, except: &DeviceId) -> Result<Vec<tillmesh_domain::wire::MemberV1>, StoreError> {
        Ok(self
            .store
            .devices()
            .await?
            .into_iter()
            .filter(|d| d.trusted && &d.device_id != except && d.device_id != self.me)
            .map(|d| tillmesh_domain::wire::MemberV1 { device_id: d.device_id, address: d.address, port: d.port })
            .collect())
    }

    /// This terminal's id.
    pub fn device_id(&self) -> &DeviceId {
        &self.me
    }

    /// Public id of the store this terminal belongs to now.
    pub fn store_id(&self) -> String {
        self.store_id.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Switches to another store (after joining it with a pairing code).
    pub fn set_store_id(&self, store_id: String) {
        *self.store_id.write().unwrap_or_else(std::sync::PoisonError::into_inner) = store_id;
    }

    /// Stops trusting every other device (they belonged to the previous store).
    ///
    /// # Errors
    /// Store errors.
    pub async fn untrust_peers(&self) -> Result<(), StoreError> {
        for mut d in self.store.devices().await? {
            if d.device_id != self.me && d.trusted {
                d.trusted = false;
                self.store.upsert_device(d).await?;
            }
        }
        Ok(())
    }

    /// Registers this terminal itself.
    ///
    /// # Errors
    /// Store errors.
    pub async fn register_self(&self, name: &str, address: &str, port: u16) -> Result<(), StoreError> {
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
                let status = self.status_of(&record, now);
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
            .filter(|d| d.record.device_id != self.me && d.record.trusted && d.status != LivenessStatus::Offline)
            .collect())
    }

    /// Pairs with the terminal at `address` (manual pairing and `--peer`).
    ///
    /// # Errors
    /// [`PairError`] saying why the address is not a terminal of this store.
    pub async fn pair(&self, address: &str) -> Result<DeviceRecord, PairError> {
        self.pair_as(address, DeviceSource::Manual).await
    }

    /// [`NetworkService::pair`], recording the device as learned from `source`.
    async fn pair_as(&self, address: &str, source: DeviceSource) -> Result<DeviceRecord, PairError> {
        let base = peer_base_url(address).map_err(PairError::BadAddress)?;
        let hello = match self.transport.hello(&base).await {
            Ok(h) => h,
            Err(TransportError::Unreachable(e)) => return Err(PairError::Unreachable(base, e)),
            Err(e) => return Err(PairError::Foreign(format!("{base} is not a tillmesh terminal: {e}"))),
        };
        if hello.device_id == self.me {
            return Err(PairError::Foreign(format!("{base} is this terminal itself")));
        }
        if hello.store_id != self.store_id() {
            return Err(PairError::Foreign(format!(
                "{base} is a tillmesh terminal of another store ({}); join that store with a pairing code or start both with the same store key",
                hello.store_id
            )));
        }
        // The store id is public: only the authenticated handshake proves membership.
        match self.transport.verify_membership(&base).await {
            Ok(id) if id == hello.device_id => {}
            Ok(id) => {
                return Err(PairError::Foreign(format!(
                    "{base} introduced itself as {} but authenticated as {id}",
                    hello.device_id
                )))
            }
            Err(TransportError::Unreachable(e)) => return Err(PairError::Unreachable(base, e)),
            Err(e) => {
                return Err(PairError::Foreign(format!(
                    "{base} claims this store but failed the store-key handshake: {e}"
                )))
            }
        }
        let (host, port) = split_base(&base);
        let record = DeviceRecord {
            device_id: hello.device_id.clone(),
            name: hello.name.clone(),
            address: host,
            port,
            last_seen: self.clock.now(),
            source,
            trusted: true,
        };
        self.store.upsert_device(record.clone()).await?;
        self.discovery_state().withdrawn.remove(&record.device_id);
        self.note_status(&record.device_id, &record.name, LivenessStatus::Online);
        Ok(record)
    }

    /// Handles a peer announced by discovery: confirms it answers the protocol on one
    /// of its addresses and records it (trusted only when it belongs to this store).
    pub async fn on_discovered(&self, event: DiscoveryEvent) {
        let seq = self.next_discovery_seq();
        self.handle_discovery(event, seq).await;
    }

    /// Numbers a discovery event; take it when the adapter reports the event, before
    /// handing it to [`Self::handle_discovery`] on another task.
    pub fn next_discovery_seq(&self) -> u64 {
        self.discovery_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Handles discovery event number `seq` (see [`Self::next_discovery_seq`]).
    /// Events are handled concurrently; the numbers keep an older `Found` (slow to
    /// answer) from overwriting a newer one's address, or undoing a later `Lost`.
    ///
    /// - `Found`: repeated with the same addresses within 2 s → skipped. Otherwise the
    ///   addresses are tried best first and the first that answers hello with the
    ///   announced device id is recorded (an address that does not answer never is).
    /// - `Lost` (goodbye or expiry): the device is offline at once (`device_offline`).
    pub async fn handle_discovery(&self, event: DiscoveryEvent, seq: u64) {
        let (device_id, name, addresses, port) = match event {
            DiscoveryEvent::Found { device_id, name, addresses, port, .. } => (device_id, name, addresses, port),
            DiscoveryEvent::Lost { device_id } => {
                self.on_lost(&device_id, seq).await;
                return;
            }
        };
        if device_id == self.me {
            return;
        }
        if !self.begin_found(&device_id, &addresses, port) {
            tracing::debug!(device = %device_id, "same addresses handled moments ago; skipped");
            return;
        }
        for addr in addresses {
            let base = base_url(&addr, port);
            match self.transport.hello(&base).await {
                Ok(hello) if hello.device_id == device_id => {
                    // Trust needs the authenticated handshake, not the public store id.
                    let trusted = hello.store_id == self.store_id()
                        && match self.transport.verify_membership(&base).await {
                            Ok(id) => id == device_id,
                            Err(e) => {
                                tracing::warn!(%base, error = %e, "discovered terminal failed the store-key handshake");
                                false
                            }
                        };
                    let record = DeviceRecord {
                        device_id: device_id.clone(),
                        name: if hello.name.is_empty() { name.clone() } else { hello.name.clone() },
                        address: addr.clone(),
                        port,
                        last_seen: self.clock.now(),
                        source: DeviceSource::Mdns,
                        trusted,
                    };
                    let _ordered = self.discovery_writes.lock().await;
                    if !self.accept_found(&device_id, seq) {
                        tracing::debug!(device = %device_id, %base, "superseded by a later discovery event");
                        return;
                    }
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

    fn discovery_state(&self) -> MutexGuard<'_, DiscoveryState> {
        self.discovery.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether to handle a `Found` with these addresses now (debounce); notes it.
    fn begin_found(&self, id: &DeviceId, addresses: &[String], port: u16) -> bool {
        let mut state = self.discovery_state();
        let now = Instant::now();
        if let Some((addrs, p, at)) = state.recent.get(id) {
            if addrs == addresses && *p == port && now.duration_since(*at) < FOUND_DEBOUNCE {
                return false;
            }
        }
        state.recent.insert(id.clone(), (addresses.to_vec(), port, now));
        true
    }

    /// Whether `Found` number `seq` may be recorded: no later `Found` was recorded and
    /// no later `Lost` arrived. If so, notes it and lifts an earlier withdrawal.
    fn accept_found(&self, id: &DeviceId, seq: u64) -> bool {
        let mut state = self.discovery_state();
        let newer_found = state.recorded.get(id).is_some_and(|s| *s > seq);
        let newer_lost = state.withdrawn.get(id).is_some_and(|w| w.seq > seq);
        if newer_found || newer_lost {
            return false;
        }
        state.recorded.insert(id.clone(), seq);
        state.withdrawn.remove(id);
        true
    }

    /// A peer withdrew its advertisement: offline now, not after the silence threshold.
    async fn on_lost(&self, id: &DeviceId, seq: u64) {
        if *id == self.me {
            return;
        }
        {
            let mut state = self.discovery_state();
            state.recent.remove(id);
            if state.recorded.get(id).is_some_and(|s| *s > seq) {
                // Found again since (a restart); this goodbye is old news.
                return;
            }
            state.withdrawn.insert(id.clone(), Withdrawal { seq, at: self.clock.now() });
        }
        match self.store.device(id).await {
            Ok(Some(d)) => {
                tracing::info!(device = %id, "terminal withdrew its mDNS advertisement: offline");
                self.note_status(id, &d.name, LivenessStatus::Offline);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(device = %id, error = %e, "could not look up a lost device"),
        }
    }

    /// Liveness of `record` now: this terminal is always online; a withdrawn device is
    /// offline until heard from after the offline threshold has passed since.
    fn status_of(&self, record: &DeviceRecord, now: Timestamp) -> LivenessStatus {
        if record.device_id == self.me {
            return LivenessStatus::Online;
        }
        let withdrawn = self.discovery_state().withdrawn.get(&record.device_id).copied();
        match withdrawn {
            Some(w) if record.last_seen < w.at.plus_millis(self.liveness.offline_after_ms) => LivenessStatus::Offline,
            _ => self.liveness.status(record.last_seen, now),
        }
    }

    /// Records that `peer` answered (sync or ping). A peer pulling a long backlog
    /// calls this for every batch it is served; last-seen is written at most every
    /// [`TOUCH_EVERY`], far finer than any liveness threshold, instead of a write
    /// transaction per batch.
    pub async fn touch(&self, peer: &DeviceId) {
        let now = self.clock.now();
        {
            let mut last = self.last_touch.lock().unwrap_or_else(PoisonError::into_inner);
            let recent =
                last.get(peer).is_some_and(|t| *t <= now && now.millis_since(*t) < TOUCH_EVERY.as_millis() as u64);
            if recent {
                return;
            }
            last.insert(peer.clone(), now);
        }
        let _ = self.store.touch_device(peer, now).await;
    }

    /// One heartbeat: pings every known peer, refreshes last-seen of those that
    /// answer, and emits online/offline transitions.
    pub async fn heartbeat(&self) {
        let Ok(devices) = self.store.devices().await else {
            return;
        };
        let pings = devices.iter().filter(|d| d.device_id != self.me).map(|d| async move {
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
        match (previous.map(|p| p != LivenessStatus::Offline), status != LivenessStatus::Offline) {
            (None | Some(false), true) => {
                self.events.publish(EventKind::DeviceOnline, json!({"device_id": id, "name": name}));
            }
            (Some(true), false) => {
                self.events.publish(EventKind::DeviceOffline, json!({"device_id": id, "name": name}));
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
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse().unwrap_or(80)),
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
        let seq = network.next_discovery_seq();
        self.runtime.spawn(async move { network.handle_discovery(event, seq).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tillmesh_domain::wire::{PullRequestV1, PullResponseV1, PROTOCOL_VERSION};
    use tillmesh_store_sqlite::SqliteStore;

    const STORE: &str = "store-a";

    fn id(s: &str) -> DeviceId {
        DeviceId::parse(s).expect("device id")
    }

    struct FixedClock(Mutex<Timestamp>);

    impl FixedClock {
        fn advance(&self, ms: u64) {
            let mut now = self.0.lock().expect("clock");
            *now = now.plus_millis(ms);
        }
    }

    impl Clock for FixedClock {
        fn now(&self) -> Timestamp {
            *self.0.lock().expect("clock")
        }
    }

    /// Answers hello for the bases in `up` (as device `peer` of `STORE`); counts calls.
    #[derive(Default)]
    struct FakeTransport {
        up: Mutex<HashSet<String>>,
        hellos: Mutex<Vec<String>>,
    }

    impl FakeTransport {
        fn set_up(&self, base: &str, up: bool) {
            let mut set = self.up.lock().expect("up");
            if up {
                set.insert(base.to_string());
            } else {
                set.remove(base);
            }
        }

        fn hello_count(&self) -> usize {
            self.hellos.lock().expect("hellos").len()
        }
    }

    #[async_trait::async_trait]
    impl PeerTransport for FakeTransport {
        async fn hello(&self, base: &str) -> Result<HelloV1, TransportError> {
            self.hellos.lock().expect("hellos").push(base.to_string());
            if !self.up.lock().expect("up").contains(base) {
                return Err(TransportError::Unreachable(format!("{base} refused")));
            }
            Ok(HelloV1 {
                service: "tillmesh".into(),
                device_id: id("peer"),
                name: "Till 2".into(),
                protocol: PROTOCOL_VERSION,
                store_id: STORE.into(),
                port: 7700,
            })
        }

        async fn pull(&self, _base: &str, _req: &PullRequestV1) -> Result<PullResponseV1, TransportError> {
            Err(TransportError::Remote("not in these tests".into()))
        }

        async fn verify_membership(&self, base: &str) -> Result<DeviceId, TransportError> {
            if self.up.lock().expect("up").contains(base) {
                Ok(id("peer"))
            } else {
                Err(TransportError::Unreachable(base.into()))
            }
        }
    }

    struct Rig {
        net: NetworkService,
        clock: Arc<FixedClock>,
        transport: Arc<FakeTransport>,
        events: tokio::sync::broadcast::Receiver<crate::events::Event>,
    }

    fn rig() -> Rig {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let clock = Arc::new(FixedClock(Mutex::new(Timestamp(1_000_000))));
        let transport = Arc::new(FakeTransport::default());
        let bus = EventBus::new();
        let events = bus.subscribe();
        let net = NetworkService::new(
            id("me"),
            STORE.into(),
            store,
            clock.clone(),
            transport.clone(),
            bus,
            LivenessPolicy::new(1_000, 3_000),
        );
        Rig { net, clock, transport, events }
    }

    fn found(addresses: &[&str]) -> DiscoveryEvent {
        DiscoveryEvent::Found {
            device_id: id("peer"),
            name: "Till 2".into(),
            addresses: addresses.iter().map(|a| (*a).to_string()).collect(),
            port: 7700,
            store_id: STORE.into(),
            protocol: PROTOCOL_VERSION,
        }
    }

    fn lost() -> DiscoveryEvent {
        DiscoveryEvent::Lost { device_id: id("peer") }
    }

    async fn peer(r: &Rig) -> Option<DeviceView> {
        r.net.devices().await.expect("devices").into_iter().find(|d| d.record.device_id == id("peer"))
    }

    fn drain(r: &mut Rig) -> Vec<(EventKind, String)> {
        let mut out = Vec::new();
        while let Ok(e) = r.events.try_recv() {
            out.push((e.kind, e.data["device_id"].as_str().unwrap_or_default().to_string()));
        }
        out
    }

    #[tokio::test]
    async fn a_link_local_only_found_that_does_not_answer_records_nothing_and_a_later_ipv4_one_does() {
        let r = rig();
        r.net.on_discovered(found(&["fe80::1%eth0"])).await;
        assert!(peer(&r).await.is_none(), "an address that does not answer is never recorded");
        r.transport.set_up("http://10.0.0.2:7700", true);
        r.net.on_discovered(found(&["10.0.0.2", "fe80::1%eth0"])).await;
        let d = peer(&r).await.expect("recorded");
        assert_eq!(d.record.address, "10.0.0.2");
        assert_eq!(d.record.source, DeviceSource::Mdns);
        assert!(d.record.trusted);
        assert_eq!(d.status, LivenessStatus::Online);
    }

    #[tokio::test]
    async fn a_later_found_with_a_better_address_replaces_the_recorded_one() {
        let r = rig();
        r.transport.set_up("http://[fd00::2]:7700", true);
        r.net.on_discovered(found(&["fd00::2"])).await;
        assert_eq!(peer(&r).await.expect("recorded").record.address, "fd00::2");
        r.transport.set_up("http://10.0.0.2:7700", true);
        r.net.on_discovered(found(&["10.0.0.2", "fd00::2"])).await;
        assert_eq!(peer(&r).await.expect("recorded").record.address, "10.0.0.2");
    }

    #[tokio::test]
    async fn an_older_found_handled_late_does_not_overwrite_a_newer_one() {
        let r = rig();
        r.transport.set_up("http://10.0.0.2:7700", true);
        r.transport.set_up("http://[fd00::2]:7700", true);
        let (older, newer) = (r.net.next_discovery_seq(), r.net.next_discovery_seq());
        r.net.handle_discovery(found(&["10.0.0.2", "fd00::2"]), newer).await;
        r.net.handle_discovery(found(&["fd00::2"]), older).await;
        assert_eq!(peer(&r).await.expect("recorded").record.address, "10.0.0.2");
    }

    #[tokio::test]
    async fn the_same_addresses_found_again_within_two_seconds_are_not_dialled_again() {
        let r = rig();
        r.transport.set_up("http://10.0.0.2:7700", true);
        r.net.on_discovered(found(&["10.0.0.2"])).await;
        r.net.on_discovered(found(&["10.0.0.2"])).await;
        assert_eq!(r.transport.hello_count(), 1);
        r.net.on_discovered(found(&["10.0.0.2", "fd00::2"])).await;
        assert_eq!(r.transport.hello_count(), 2, "a new address set is handled");
    }

    #[tokio::test]
    async fn lost_makes_a_device_offline_at_once_until_it_is_found_again() {
        let mut r = rig();
        r.transport.set_up("http://10.0.0.2:7700", true);
        r.net.on_discovered(found(&["10.0.0.2"])).await;
        assert_eq!(drain(&mut r), vec![(EventKind::DeviceOnline, "peer".to_string())]);

        r.net.on_discovered(lost()).await;
        assert_eq!(peer(&r).await.expect("kept").status, LivenessStatus::Offline);
        assert!(r.net.sync_peers().await.expect("peers").is_empty());
        assert_eq!(drain(&mut r), vec![(EventKind::DeviceOffline, "peer".to_string())]);
        // Still answering while it shuts down: that does not bring it back.
        r.clock.advance(500);
        r.net.heartbeat().await;
        assert_eq!(peer(&r).await.expect("kept").status, LivenessStatus::Offline);
        assert!(drain(&mut r).is_empty());

        // Advertised again (a restart): online at once, even with the same addresses.
        r.net.on_discovered(found(&["10.0.0.2"])).await;
        assert_eq!(peer(&r).await.expect("kept").status, LivenessStatus::Online);
        assert_eq!(drain(&mut r), vec![(EventKind::DeviceOnline, "peer".to_string())]);
    }

    #[tokio::test]
    async fn a_withdrawn_device_that_keeps_answering_comes_back_after_the_offline_threshold() {
        let mut r = rig();
        r.transport.set_up("http://10.0.0.2:7700", true);
        r.net.on_discovered(found(&["10.0.0.2"])).await;
        r.net.on_discovered(lost()).await;
        r.clock.advance(3_000);
        r.net.heartbeat().await;
        assert_eq!(peer(&r).await.expect("kept").status, LivenessStatus::Online);
        let kinds: Vec<EventKind> = drain(&mut r).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, vec![EventKind::DeviceOnline, EventKind::DeviceOffline, EventKind::DeviceOnline]);
    }

    #[tokio::test]
    async fn a_lost_older_than_the_last_recorded_found_is_ignored() {
        let r = rig();
        r.transport.set_up("http://10.0.0.2:7700", true);
        let (lost_seq, found_seq) = (r.net.next_discovery_seq(), r.net.next_discovery_seq());
        r.net.handle_discovery(found(&["10.0.0.2"]), found_seq).await;
        r.net.handle_discovery(lost(), lost_seq).await;
        assert_eq!(peer(&r).await.expect("recorded").status, LivenessStatus::Online);
    }

    #[tokio::test]
    async fn a_found_older_than_a_lost_is_not_recorded() {
        let r = rig();
        r.transport.set_up("http://10.0.0.2:7700", true);
        r.net.on_discovered(found(&["10.0.0.2"])).await;
        let (found_seq, lost_seq) = (r.net.next_discovery_seq(), r.net.next_discovery_seq());
        r.net.handle_discovery(lost(), lost_seq).await;
        r.net.handle_discovery(found(&["10.0.0.2", "fd00::2"]), found_seq).await;
        assert_eq!(peer(&r).await.expect("kept").status, LivenessStatus::Offline);
    }
}
