//! Devices known to this terminal: itself, and peers found by mDNS or paired by hand.

use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;
use crate::time::Timestamp;

/// How a device came to be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSource {
    /// This terminal.
    #[serde(rename = "self")]
    Local,
    /// Found by mDNS browsing.
    Mdns,
    /// Paired by address (`POST /api/network/pair` or `--peer`).
    Manual,
    /// Learned from another member: it pulled from this terminal, or a member listed
    /// it (trusted only after this terminal's own handshake with it).
    Peer,
}

impl DeviceSource {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "self",
            Self::Mdns => "mdns",
            Self::Manual => "manual",
            Self::Peer => "peer",
        }
    }

    /// How strong a source is: a device's recorded source only moves to a stronger or
    /// equal one (this terminal > paired by hand > found by mDNS > told by a peer).
    pub fn rank(self) -> u8 {
        match self {
            Self::Local => 3,
            Self::Manual => 2,
            Self::Mdns => 1,
            Self::Peer => 0,
        }
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "self" => Some(Self::Local),
            "mdns" => Some(Self::Mdns),
            "manual" => Some(Self::Manual),
            "peer" => Some(Self::Peer),
            _ => None,
        }
    }
}

/// A registry entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device's id.
    pub device_id: DeviceId,
    /// Human name.
    pub name: String,
    /// Host or IP to reach it.
    pub address: String,
    /// HTTP port.
    pub port: u16,
    /// Last successful contact.
    pub last_seen: Timestamp,
    /// How it was found.
    pub source: DeviceSource,
    /// Whether it proved membership of this store.
    pub trusted: bool,
}
