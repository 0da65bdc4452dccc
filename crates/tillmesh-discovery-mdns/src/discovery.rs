//! `MdnsDiscovery`: the [`Discovery`] port over mdns-sd — one `ServiceDaemon` that
//! registers this terminal and browses for the others on a background thread.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use mdns_sd::{IfKind, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use tillmesh_domain::ports::{Advertisement, Discovery, DiscoveryError, DiscoverySink};

use crate::addresses::{is_v6_link_local, LocalNet, PeerAddress};
use crate::peers::{PeerTable, Resolution};
use crate::txt::{build_txt, host_name, instance_name, parse_txt, SERVICE_TYPE};

/// How long `shutdown` waits for each step (unregister, daemon exit, browser thread).
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// mdns-sd re-sends the goodbye 120 ms after the first one; let it go out before exit.
const GOODBYE_RESEND: Duration = Duration::from_millis(150);

/// Which interfaces mDNS uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MdnsConfig {
    /// Interface names to use, e.g. `["eth0"]`. Empty = every interface that is up,
    /// except loopback (a terminal is never advertised on loopback alone).
    pub interfaces: Vec<String>,
}

/// mDNS discovery: advertises `_tillmesh._tcp.local.` and reports the peers that
/// advertise it. Create with [`MdnsDiscovery::new`], then use it through the
/// [`Discovery`] port. `shutdown` must be awaited inside a tokio runtime.
pub struct MdnsDiscovery {
    config: MdnsConfig,
    running: Mutex<Option<Running>>,
}

struct Running {
    daemon: ServiceDaemon,
    fullname: String,
    browser: Option<JoinHandle<()>>,
}

impl MdnsDiscovery {
    /// A stopped discovery with this configuration.
    pub fn new(config: MdnsConfig) -> Self {
        Self { config, running: Mutex::new(None) }
    }

    /// The configuration.
    pub fn config(&self) -> &MdnsConfig {
        &self.config
    }

    /// The full DNS-SD name this terminal is registered under, while started.
    pub fn registered_name(&self) -> Option<String> {
        self.lock().as_ref().map(|r| r.fullname.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MdnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsDiscovery")
            .field("config", &self.config)
            .field("registered_name", &self.registered_name())
            .finish()
    }
}

impl Drop for MdnsDiscovery {
    fn drop(&mut self) {
        // Not shut down: at least stop the daemon (its exit still sends the goodbye).
        if let Some(running) = self.lock().take() {
            if let Err(e) = running.daemon.shutdown() {
                tracing::debug!("mdns: daemon shutdown on drop: {e}");
            }
        }
    }
}

/// The address of this terminal on the LAN (the interface of the default route), or
/// `None` when there is none besides loopback. Register the terminal under it.
pub fn local_lan_ip() -> Option<IpAddr> {
    local_ip_address::local_ip().ok().filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// The networks of the interfaces mDNS uses: the named ones, or every non-loopback
/// interface that is up.
fn local_nets(config: &MdnsConfig) -> std::io::Result<Vec<LocalNet>> {
    let nets = if_addrs::get_if_addrs()?
        .into_iter()
        .filter(|i| {
            if config.interfaces.is_empty() {
                !i.is_loopback() && i.is_oper_up() && !i.is_p2p()
            } else {
                config.interfaces.contains(&i.name)
            }
        })
        .map(|i| {
            let prefix_len = match &i.addr {
                if_addrs::IfAddr::V4(a) => a.prefixlen,
                if_addrs::IfAddr::V6(a) => a.prefixlen,
            };
            LocalNet { addr: i.ip(), interface: i.name, prefix_len }
        })
        .collect();
    Ok(nets)
}

/// Checks that mDNS has somewhere to go before starting the daemon.
fn check_interfaces(config: &MdnsConfig) -> Result<Vec<LocalNet>, DiscoveryError> {
    let nets =
        local_nets(config).map_err(|e| DiscoveryError::Unavailable(format!("cannot list network interfaces: {e}")))?;
    for name in &config.interfaces {
        if !nets.iter().any(|n| &n.interface == name) {
            return Err(DiscoveryError::Unavailable(format!(
                "mDNS interface `{name}` does not exist or has no IP address"
            )));
        }
    }
    if nets.is_empty() {
        return Err(DiscoveryError::Unavailable(
            "no network interface besides loopback is up; mDNS needs a LAN \
             (or name interfaces explicitly)"
                .into(),
        ));
    }
    Ok(nets)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError::Unavailable(format!("mDNS {what}: {e}"))
}

/// Starts the daemon, restricted to the configured interfaces.
fn start_daemon(config: &MdnsConfig) -> Result<ServiceDaemon, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(|e| unavailable("daemon", e))?;
    let restricted = if config.interfaces.is_empty() {
        daemon
            .disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
            .map_err(|e| unavailable("interface selection", e))
    } else {
        daemon
            .disable_interface(IfKind::All)
            .and_then(|()| {
                daemon.enable_interface(config.interfaces.iter().map(|n| IfKind::Name(n.clone())).collect::<Vec<_>>())
            })
            .map_err(|e| unavailable("interface selection", e))
    };
    if let Err(e) = restricted {
        let _ = daemon.shutdown();
        return Err(e);
    }
    Ok(daemon)
}

fn service_info(ad: &Advertisement, config: &MdnsConfig) -> Result<ServiceInfo, DiscoveryError> {
    let instance = instance_name(&ad.name, &ad.device_id);
    let txt = build_txt(ad);
    let mut info = ServiceInfo::new(SERVICE_TYPE, &instance, &host_name(&ad.device_id), "", ad.port, &txt[..])
        .map_err(|e| DiscoveryError::Unexpected(format!("mDNS service record: {e}")))?
        .enable_addr_auto();
    if !config.interfaces.is_empty() {
        info.set_interfaces(config.interfaces.iter().map(|n| IfKind::Name(n.clone())).collect());
    }
    Ok(info)
}

#[async_trait::async_trait]
impl Discovery for MdnsDiscovery {
    async fn start(&self, ad: Advertisement, sink: Arc<dyn DiscoverySink>) -> Result<(), DiscoveryError> {
        let mut running = self.lock();
        if running.is_some() {
            return Err(DiscoveryError::Unexpected("mDNS discovery is already started".into()));
        }
        check_interfaces(&self.config)?;
        let info = service_info(&ad, &self.config)?;
        let fullname = info.get_fullname().to_owned();
        let daemon = start_daemon(&self.config)?;
        let browse = daemon
            .register(info)
            .map_err(|e| unavailable("register", e))
            .and_then(|()| daemon.browse(SERVICE_TYPE).map_err(|e| unavailable("browse", e)));
        let events = match browse {
            Ok(events) => events,
            Err(e) => {
                let _ = daemon.shutdown();
                return Err(e);
            }
        };
        let browser = Browser { table: PeerTable::new(ad.device_id.clone()), config: self.config.clone(), sink };
        let handle =
            std::thread::Builder::new().name("tillmesh-mdns-browse".into()).spawn(move || browser.run(&events));
        let browser = match handle {
            Ok(h) => h,
            Err(e) => {
                let _ = daemon.shutdown();
                return Err(DiscoveryError::Unexpected(format!("cannot start the mDNS browser thread: {e}")));
            }
        };
        tracing::info!(
            service = %fullname,
            interfaces = ?self.config.interfaces,
            "mdns: advertising and browsing"
        );
        *running = Some(Running { daemon, fullname, browser: Some(browser) });
        Ok(())
    }

    async fn shutdown(&self) {
        let Some(mut running) = self.lock().take() else {
            return;
        };
        // 1. Goodbye: unregister and wait until the daemon has sent it (and its resend).
        match running.daemon.unregister(&running.fullname) {
            Ok(done) => {
                match tokio::time::timeout(STEP_TIMEOUT, done.recv_async()).await {
                    Ok(Ok(status)) => tracing::debug!("mdns: unregister: {status:?}"),
                    Ok(Err(e)) => tracing::debug!("mdns: unregister: {e}"),
                    Err(_) => tracing::warn!("mdns: unregister did not complete in time"),
                }
                tokio::time::sleep(GOODBYE_RESEND).await;
            }
            Err(e) => tracing::debug!("mdns: unregister: {e}"),
        }
        // 2. Stop browsing and the daemon.
        if let Err(e) = running.daemon.stop_browse(SERVICE_TYPE) {
            tracing::debug!("mdns: stop browse: {e}");
        }
        match running.daemon.shutdown() {
            Ok(done) => {
                if tokio::time::timeout(STEP_TIMEOUT, done.recv_async()).await.is_err() {
                    tracing::warn!("mdns: daemon did not stop in time");
                }
            }
            Err(e) => tracing::debug!("mdns: daemon shutdown: {e}"),
        }
        // 3. The browser thread ends when its channel closes: no event after this.
        if let Some(handle) = running.browser.take() {
            let joined = tokio::task::spawn_blocking(move || handle.join());
            if tokio::time::timeout(STEP_TIMEOUT, joined).await.is_err() {
                tracing::warn!("mdns: browser thread did not stop in time");
            }
        }
        tracing::info!(service = %running.fullname, "mdns: stopped");
    }
}

/// The background loop that turns browse events into discovery events.
struct Browser {
    table: PeerTable,
    config: MdnsConfig,
    sink: Arc<dyn DiscoverySink>,
}

impl Browser {
    fn run(mut self, events: &mdns_sd::Receiver<ServiceEvent>) {
        // Ends when the daemon drops the channel (stop_browse or shutdown).
        while let Ok(event) = events.recv() {
            let out = match event {
                ServiceEvent::ServiceResolved(service) => self.resolved(&service),
                ServiceEvent::ServiceRemoved(_ty, fullname) => {
                    tracing::debug!(%fullname, "mdns: service removed");
                    self.table.removed(&fullname)
                }
                ServiceEvent::SearchStopped(_) => break,
                other => {
                    tracing::trace!("mdns: {other:?}");
                    Vec::new()
                }
            };
            for e in out {
                tracing::debug!("mdns: {e:?}");
                self.sink.on_event(e);
            }
        }
    }

    fn resolved(&mut self, service: &ResolvedService) -> Vec<tillmesh_domain::ports::DiscoveryEvent> {
        let txt = match parse_txt(service.get_properties().iter().map(|p| (p.key(), p.val()))) {
            Ok(txt) => txt,
            Err(e) => {
                tracing::debug!(fullname = %service.fullname, "mdns: ignoring service: {e}");
                return Vec::new();
            }
        };
        let addresses = service.get_addresses().iter().map(peer_address).collect();
        // Interfaces come and go (DHCP): look at them afresh for each resolution.
        let local = local_nets(&self.config).unwrap_or_default();
        self.table.resolved(
            Resolution { fullname: service.fullname.clone(), port: service.port, txt, addresses },
            &local,
            !self.config.interfaces.is_empty(),
        )
    }
}

fn peer_address(ip: &ScopedIp) -> PeerAddress {
    match ip {
        ScopedIp::V6(v6) if is_v6_link_local(v6.addr()) && v6.scope_id().index != 0 => {
            PeerAddress::scoped(IpAddr::V6(*v6.addr()), v6.scope_id().name.clone())
        }
        other => PeerAddress::new(other.to_ip_addr()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillmesh_domain::ids::DeviceId;
    use tillmesh_domain::ports::DiscoveryEvent;

    struct NoSink;
    impl DiscoverySink for NoSink {
        fn on_event(&self, _event: DiscoveryEvent) {}
    }

    fn ad() -> Advertisement {
        Advertisement {
            device_id: DeviceId::parse("unit-dev").expect("device id"),
            name: "Unit".into(),
            port: 7700,
            store_id: "store".into(),
            protocol: 1,
        }
    }

    #[test]
    fn discovery_is_send_and_sync() {
        fn is<T: Send + Sync + 'static>() {}
        is::<MdnsDiscovery>();
    }

    #[tokio::test]
    async fn an_unknown_interface_is_reported_as_unavailable_before_any_traffic() {
        let d = MdnsDiscovery::new(MdnsConfig { interfaces: vec!["no-such-if0".into()] });
        let err = d.start(ad(), Arc::new(NoSink)).await.expect_err("must fail");
        assert!(matches!(&err, DiscoveryError::Unavailable(m) if m.contains("no-such-if0")), "{err}");
        assert!(d.registered_name().is_none());
        d.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_without_start_is_a_no_op_and_idempotent() {
        let d = MdnsDiscovery::new(MdnsConfig::default());
        d.shutdown().await;
        d.shutdown().await;
    }

    #[test]
    fn service_record_carries_the_advertisement() {
        let info = service_info(&ad(), &MdnsConfig::default()).expect("record");
        assert_eq!(info.get_fullname(), "Unit (unit-dev)._tillmesh._tcp.local.");
        assert_eq!(info.get_hostname(), "unit-dev.local.");
        assert_eq!(info.get_port(), 7700);
        assert_eq!(info.get_property_val_str("id"), Some("unit-dev"));
        assert_eq!(info.get_property_val_str("proto"), Some("1"));
        assert_eq!(info.get_property_val_str("store"), Some("store"));
        assert_eq!(info.get_property_val_str("name"), Some("Unit"));
        assert!(info.is_addr_auto());
    }

    #[test]
    fn local_lan_ip_is_never_loopback() {
        if let Some(ip) = local_lan_ip() {
            assert!(!ip.is_loopback());
        }
    }
}
