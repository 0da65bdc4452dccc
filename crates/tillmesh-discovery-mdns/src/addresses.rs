//! Peer address ranking: which of a peer's advertised addresses to dial first, given
//! the networks of this terminal's enabled interfaces. Pure functions.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One network this terminal is on: an address of an enabled interface and its prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNet {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// This terminal's address on it.
    pub addr: IpAddr,
    /// Prefix length (24 for a /24).
    pub prefix_len: u8,
}

impl LocalNet {
    /// Whether `ip` is in this network (same family, same prefix).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = prefix_mask_v4(self.prefix_len);
                u32::from(net) & mask == u32::from(*ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = prefix_mask_v6(self.prefix_len);
                u128::from(net) & mask == u128::from(*ip) & mask
            }
            _ => false,
        }
    }
}

fn prefix_mask_v4(len: u8) -> u32 {
    match len {
        0 => 0,
        1..=31 => u32::MAX << (32 - u32::from(len)),
        _ => u32::MAX,
    }
}

fn prefix_mask_v6(len: u8) -> u128 {
    match len {
        0 => 0,
        1..=127 => u128::MAX << (128 - u32::from(len)),
        _ => u128::MAX,
    }
}

/// An address a peer advertised, as received.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddress {
    /// The address.
    pub ip: IpAddr,
    /// For an IPv6 link-local address: the name of the interface it was seen on
    /// (without it the address cannot be dialled).
    pub scope: Option<String>,
}

impl PeerAddress {
    /// An address without scope.
    pub fn new(ip: IpAddr) -> Self {
        Self { ip, scope: None }
    }

    /// An address with the interface it was seen on (used for IPv6 link-local).
    pub fn scoped(ip: IpAddr, scope: impl Into<String>) -> Self {
        let scope = scope.into();
        Self { ip, scope: (!scope.is_empty()).then_some(scope) }
    }

    /// Text form: `10.0.0.5`, `fd00::5`, or `fe80::1%eth0` for a scoped link-local.
    pub fn render(&self) -> String {
        match (&self.ip, &self.scope) {
            (IpAddr::V6(v6), Some(scope)) if is_v6_link_local(v6) => format!("{v6}%{scope}"),
            (ip, _) => ip.to_string(),
        }
    }
}

/// Whether `ip` is in fe80::/10.
pub fn is_v6_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Rank of an address: lower is dialled first; `None` = never dial.
fn rank(addr: &PeerAddress, local: &[LocalNet], strict: bool) -> Option<u8> {
    let on_local_net = local.iter().any(|n| n.contains(&addr.ip));
    match addr.ip {
        IpAddr::V4(v4) => rank_v4(v4, on_local_net, strict),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return rank_v4(v4, local.iter().any(|n| n.contains(&IpAddr::V4(v4))), strict);
            }
            if v6.is_unspecified() || v6.is_multicast() {
                None
            } else if v6.is_loopback() {
                on_local_net.then_some(LOOPBACK)
            } else if is_v6_link_local(&v6) {
                // Without the interface it was seen on, a link-local address is useless.
                let scope = addr.scope.as_deref()?;
                if strict && !local.iter().any(|n| n.interface == scope) {
                    None
                } else {
                    Some(4)
                }
            } else if on_local_net {
                Some(2)
            } else if strict {
                None
            } else {
                Some(3)
            }
        }
    }
}

/// Rank of loopback addresses: only used when nothing else is left.
const LOOPBACK: u8 = u8::MAX;

fn rank_v4(v4: Ipv4Addr, on_local_net: bool, strict: bool) -> Option<u8> {
    if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() {
        None
    } else if v4.is_loopback() {
        on_local_net.then_some(LOOPBACK)
    } else if on_local_net {
        Some(0)
    } else if strict {
        None
    } else if v4.is_link_local() {
        Some(5)
    } else {
        Some(1)
    }
}

/// Orders a peer's addresses best-first, as text ready to dial (see [`PeerAddress::render`]).
///
/// - IPv4 addresses in the network of one of `local` (the enabled interfaces) come
///   first, then other IPv4, then IPv6 on a local network, other IPv6, scoped
///   link-local IPv6, and IPv4 link-local (169.254/16) last.
/// - Loopback (127.0.0.0/8, `::1`) is kept only when loopback is one of the enabled
///   interfaces (in `local`) and the peer advertised nothing else usable (it is then
///   on this host): a remote peer's 127.0.0.1 is never dialled, nor put first.
/// - Link-local IPv6 without a scope, unspecified, multicast and broadcast addresses
///   are dropped.
/// - `strict` (mDNS restricted to named interfaces): only addresses on the networks of
///   `local` are kept, and link-local IPv6 only when seen on one of those interfaces.
pub fn order_addresses<'a>(
    addrs: impl IntoIterator<Item = &'a PeerAddress>,
    local: &[LocalNet],
    strict: bool,
) -> Vec<String> {
    let mut ranked: BTreeSet<(u8, &PeerAddress)> = BTreeSet::new();
    for addr in addrs {
        if let Some(r) = rank(addr, local, strict) {
            ranked.insert((r, addr));
        }
    }
    let has_non_loopback = ranked.iter().any(|(r, _)| *r != LOOPBACK);
    let mut out: Vec<String> = Vec::with_capacity(ranked.len());
    for (r, addr) in ranked {
        if r == LOOPBACK && has_non_loopback {
            continue;
        }
        let text = addr.render();
        if !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn net(interface: &str, addr: &str, prefix_len: u8) -> LocalNet {
        LocalNet { interface: interface.into(), addr: ip(addr), prefix_len }
    }

    fn addrs(list: &[&str]) -> Vec<PeerAddress> {
        list.iter()
            .map(|s| match s.split_once('%') {
                Some((a, scope)) => PeerAddress::scoped(ip(a), scope),
                None => PeerAddress::new(ip(s)),
            })
            .collect()
    }

    #[test]
    fn same_subnet_ipv4_comes_first_and_loopback_is_dropped() {
        let local = [net("eth0", "192.168.1.10", 24)];
        let got = order_addresses(&addrs(&["127.0.0.1", "10.8.0.5", "192.168.1.20", "::1"]), &local, false);
        assert_eq!(got, vec!["192.168.1.20", "10.8.0.5"]);
    }

    #[test]
    fn loopback_is_never_first_even_when_it_sorts_first() {
        let got = order_addresses(&addrs(&["127.0.0.1", "172.16.0.9"]), &[], false);
        assert_eq!(got, vec!["172.16.0.9"]);
    }

    #[test]
    fn loopback_alone_is_dropped_unless_loopback_is_enabled() {
        let got = order_addresses(&addrs(&["127.0.0.1", "::1"]), &[], false);
        assert!(got.is_empty(), "{got:?}");
        let lo = [net("lo", "127.0.0.1", 8), net("lo", "::1", 128)];
        let got = order_addresses(&addrs(&["127.0.0.1", "::1"]), &lo, true);
        assert_eq!(got, vec!["127.0.0.1", "::1"]);
        let got = order_addresses(&addrs(&["127.0.0.1", "10.0.0.4"]), &lo, false);
        assert_eq!(got, vec!["10.0.0.4"]);
    }

    #[test]
    fn link_local_ipv6_without_scope_is_dropped_and_with_scope_rendered() {
        let got =
            order_addresses(&addrs(&["fe80::1", "fe80::2%eth0", "10.0.0.7"]), &[net("eth0", "10.0.0.1", 24)], false);
        assert_eq!(got, vec!["10.0.0.7", "fe80::2%eth0"]);
    }

    #[test]
    fn ipv4_before_ipv6_and_ipv4_link_local_last() {
        let got = order_addresses(
            &addrs(&["169.254.3.3", "fd00::5", "2001:db8::5", "fe80::9%en0", "10.1.2.3"]),
            &[net("en0", "fd00::1", 64)],
            false,
        );
        assert_eq!(got, vec!["10.1.2.3", "fd00::5", "2001:db8::5", "fe80::9%en0", "169.254.3.3"]);
    }

    #[test]
    fn several_same_subnet_addresses_keep_a_stable_order() {
        let local = [net("eth0", "10.201.3.1", 24)];
        let a = order_addresses(&addrs(&["10.201.3.9", "10.201.3.2"]), &local, false);
        let b = order_addresses(&addrs(&["10.201.3.2", "10.201.3.9"]), &local, false);
        assert_eq!(a, b);
        assert_eq!(a, vec!["10.201.3.2", "10.201.3.9"]);
    }

    #[test]
    fn strict_mode_keeps_only_addresses_on_the_enabled_interfaces() {
        let local = [net("veth0", "10.201.7.1", 24)];
        let got = order_addresses(
            &addrs(&["10.201.8.2", "10.201.7.2", "127.0.0.1", "fe80::1%veth1", "fe80::2%veth0", "2001:db8::1"]),
            &local,
            true,
        );
        assert_eq!(got, vec!["10.201.7.2", "fe80::2%veth0"]);
    }

    #[test]
    fn unusable_addresses_are_dropped() {
        let got = order_addresses(&addrs(&["0.0.0.0", "224.0.0.251", "255.255.255.255", "ff02::fb", "::"]), &[], false);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn duplicates_are_reported_once() {
        let mut list = addrs(&["10.0.0.2", "10.0.0.2"]);
        list.push(PeerAddress::scoped(ip("10.0.0.2"), "eth0"));
        let got = order_addresses(&list, &[], false);
        assert_eq!(got, vec!["10.0.0.2"]);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_ranked_as_ipv4() {
        let local = [net("eth0", "192.168.5.1", 24)];
        let got = order_addresses(&addrs(&["::ffff:192.168.5.9", "10.9.9.9"]), &local, false);
        assert_eq!(got, vec!["::ffff:192.168.5.9", "10.9.9.9"]);
    }

    #[test]
    fn subnet_membership_uses_the_prefix() {
        let n = net("eth0", "10.201.3.1", 24);
        assert!(n.contains(&ip("10.201.3.254")));
        assert!(!n.contains(&ip("10.201.4.1")));
        assert!(!n.contains(&ip("fe80::1")));
        assert!(net("x", "10.0.0.1", 0).contains(&ip("192.0.2.1")));
        assert!(net("x", "10.0.0.1", 32).contains(&ip("10.0.0.1")));
        assert!(!net("x", "10.0.0.1", 32).contains(&ip("10.0.0.2")));
        assert!(net("x", "fd00:1::1", 64).contains(&ip("fd00:1::abcd")));
        assert!(!net("x", "fd00:1::1", 64).contains(&ip("fd00:2::1")));
    }
}
