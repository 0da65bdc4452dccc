//! tillmesh's mDNS adapter: implements the domain's `Discovery` port with mdns-sd —
//! advertises this terminal as `_tillmesh._tcp.local.` (TXT `id`, `proto`, `store`,
//! `name`) and reports the other terminals it finds on the LAN.
//!
//! It owns the service record layout ([`txt`]), peer address ranking
//! ([`addresses`]), the de-duplication of repeated resolutions ([`peers`]) and the
//! daemon's lifecycle ([`MdnsDiscovery`]). It also ships the `tillmesh-mdns-probe`
//! binary, a test helper that prints discovery events as JSON lines.
//!
//! Layering: this crate depends on `tillmesh-domain` and its own technology (mdns-sd,
//! if-addrs, local-ip-address) only — never on another adapter or on `tillmesh-app`.

pub mod addresses;
mod discovery;
pub mod peers;
pub mod txt;

pub use discovery::{local_lan_ip, MdnsConfig, MdnsDiscovery};
pub use txt::SERVICE_TYPE;
