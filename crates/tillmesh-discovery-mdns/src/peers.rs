//! The table of peers seen by browsing: turns the raw, repetitive stream of mDNS
//! resolutions and removals into `Found` / `Lost` events (de-duplicated by service
//! full name, with address sets merged). Pure: no sockets, no clock.

use std::collections::{BTreeSet, HashMap};

use tillmesh_domain::ids::DeviceId;
use tillmesh_domain::ports::DiscoveryEvent;

use crate::addresses::{order_addresses, LocalNet, PeerAddress};
use crate::txt::PeerTxt;

/// One resolution of a peer's service, as the browser reports it.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// Service instance full name, e.g. `Till 3 (ab12cd)._tillmesh._tcp.local.`.
    pub fullname: String,
    /// SRV port.
    pub port: u16,
    /// Parsed TXT record.
    pub txt: PeerTxt,
    /// Addresses received so far (possibly only some of them).
    pub addresses: Vec<PeerAddress>,
}

#[derive(Debug)]
struct Entry {
    txt: PeerTxt,
    port: u16,
    addresses: BTreeSet<PeerAddress>,
    /// The last `Found` sent for this entry, if any.
    announced: Option<DiscoveryEvent>,
}

/// Peers currently known, keyed by lower-cased service full name.
#[derive(Debug)]
pub struct PeerTable {
    own_id: DeviceId,
    entries: HashMap<String, Entry>,
}

impl PeerTable {
    /// An empty table for the terminal `own_id` (whose own advertisement is ignored).
    pub fn new(own_id: DeviceId) -> Self {
        Self { own_id, entries: HashMap::new() }
    }

    /// Records a resolution; returns the events to emit (none when nothing new was
    /// learned). `local`/`strict` rank the addresses as in [`order_addresses`].
    pub fn resolved(&mut self, res: Resolution, local: &[LocalNet], strict: bool) -> Vec<DiscoveryEvent> {
        if res.txt.device_id == self.own_id {
            return Vec::new();
        }
        let key = res.fullname.to_ascii_lowercase();
        let mut events = Vec::new();
        // The same name now advertised by another device: the old one is gone.
        let replaced = self.entries.get(&key).is_some_and(|e| e.txt.device_id != res.txt.device_id);
        if replaced {
            events.extend(self.removed(&res.fullname));
        }
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            txt: res.txt.clone(),
            port: res.port,
            addresses: BTreeSet::new(),
            announced: None,
        });
        entry.txt = res.txt;
        entry.port = res.port;
        entry.addresses.extend(res.addresses);
        let addresses = order_addresses(&entry.addresses, local, strict);
        if addresses.is_empty() {
            // Nothing to dial yet; wait for an address record.
            return events;
        }
        let found = DiscoveryEvent::Found {
            device_id: entry.txt.device_id.clone(),
            name: entry.txt.name.clone(),
            addresses,
            port: entry.port,
            store_id: entry.txt.store_id.clone(),
            protocol: entry.txt.protocol,
        };
        if entry.announced.as_ref() != Some(&found) {
            entry.announced = Some(found.clone());
            events.push(found);
        }
        events
    }

    /// Records that the service `fullname` went away (goodbye or expiry); returns
    /// `Lost` when it had been announced and no other announced service of the same
    /// device remains.
    pub fn removed(&mut self, fullname: &str) -> Vec<DiscoveryEvent> {
        let Some(entry) = self.entries.remove(&fullname.to_ascii_lowercase()) else {
            return Vec::new();
        };
        let device_id = entry.txt.device_id;
        let still_announced = self.entries.values().any(|e| e.announced.is_some() && e.txt.device_id == device_id);
        if entry.announced.is_some() && !still_announced {
            vec![DiscoveryEvent::Lost { device_id }]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::parse(s).expect("test device id")
    }

    fn res(fullname: &str, device: &str, addrs: &[&str]) -> Resolution {
        Resolution {
            fullname: fullname.into(),
            port: 7700,
            txt: PeerTxt { device_id: id(device), protocol: 1, store_id: "store".into(), name: device.into() },
            addresses: addrs.iter().map(|a| PeerAddress::new(a.parse().expect("test address"))).collect(),
        }
    }

    fn lan() -> Vec<LocalNet> {
        vec![LocalNet { interface: "eth0".into(), addr: "10.0.0.1".parse().expect("test address"), prefix_len: 24 }]
    }

    fn found_addresses(events: &[DiscoveryEvent]) -> Vec<Vec<String>> {
        events
            .iter()
            .filter_map(|e| match e {
                DiscoveryEvent::Found { addresses, .. } => Some(addresses.clone()),
                DiscoveryEvent::Lost { .. } => None,
            })
            .collect()
    }

    #[test]
    fn own_advertisement_is_ignored() {
        let mut t = PeerTable::new(id("me"));
        assert!(t.resolved(res("me._t", "me", &["10.0.0.1"]), &lan(), false).is_empty());
        assert!(t.removed("me._t").is_empty());
    }

    #[test]
    fn repeated_resolutions_merge_addresses_and_emit_only_changes() {
        let mut t = PeerTable::new(id("me"));
        let e1 = t.resolved(res("A._t", "a", &["127.0.0.1"]), &lan(), false);
        assert!(e1.is_empty(), "loopback alone is not dialable: {e1:?}");
        let e2 = t.resolved(res("A._t", "a", &["10.0.0.2"]), &lan(), false);
        assert_eq!(found_addresses(&e2), vec![vec!["10.0.0.2".to_string()]]);
        let e3 = t.resolved(res("a._T", "a", &["10.0.0.2", "127.0.0.1"]), &lan(), false);
        assert!(e3.is_empty(), "nothing new: {e3:?}");
        let e4 = t.resolved(res("A._t", "a", &["192.168.9.9"]), &lan(), false);
        assert_eq!(found_addresses(&e4), vec![vec!["10.0.0.2".to_string(), "192.168.9.9".to_string()]]);
    }

    #[test]
    fn a_resolution_without_usable_address_is_held_back() {
        let mut t = PeerTable::new(id("me"));
        assert!(t.resolved(res("A._t", "a", &[]), &lan(), false).is_empty());
        assert!(t.resolved(res("A._t", "a", &["172.16.0.1"]), &lan(), true).is_empty());
        assert!(t.removed("A._t").is_empty(), "never announced, never lost");
    }

    #[test]
    fn removal_emits_lost_once() {
        let mut t = PeerTable::new(id("me"));
        t.resolved(res("A._t", "a", &["10.0.0.2"]), &lan(), false);
        assert_eq!(t.removed("a._t"), vec![DiscoveryEvent::Lost { device_id: id("a") }]);
        assert!(t.removed("A._t").is_empty());
    }

    #[test]
    fn a_device_with_two_names_is_lost_only_when_both_are_gone() {
        let mut t = PeerTable::new(id("me"));
        t.resolved(res("A._t", "a", &["10.0.0.2"]), &lan(), false);
        t.resolved(res("A (2)._t", "a", &["10.0.0.2"]), &lan(), false);
        assert!(t.removed("A._t").is_empty());
        assert_eq!(t.removed("A (2)._t"), vec![DiscoveryEvent::Lost { device_id: id("a") }]);
    }

    #[test]
    fn a_name_taken_over_by_another_device_loses_the_old_one() {
        let mut t = PeerTable::new(id("me"));
        t.resolved(res("A._t", "a", &["10.0.0.2"]), &lan(), false);
        let events = t.resolved(res("A._t", "b", &["10.0.0.3"]), &lan(), false);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], DiscoveryEvent::Lost { device_id: id("a") });
        assert!(matches!(&events[1], DiscoveryEvent::Found { device_id, .. } if *device_id == id("b")));
    }

    #[test]
    fn a_changed_port_or_txt_is_announced_again() {
        let mut t = PeerTable::new(id("me"));
        t.resolved(res("A._t", "a", &["10.0.0.2"]), &lan(), false);
        let mut moved = res("A._t", "a", &[]);
        moved.port = 7701;
        let events = t.resolved(moved, &lan(), false);
        assert!(matches!(
            events.as_slice(),
            [DiscoveryEvent::Found { port: 7701, addresses, .. }] if addresses == &["10.0.0.2"]
        ));
    }
}
