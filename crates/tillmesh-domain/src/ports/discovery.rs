//! Discovery port: advertise this terminal and learn of others on the LAN.

use thiserror::Error;

use crate::ids::DeviceId;

/// What this terminal advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// Device id (TXT `id`).
    pub device_id: DeviceId,
    /// Human name (instance name).
    pub name: String,
    /// HTTP port.
    pub port: u16,
    /// Public store id (TXT `store`); never a secret.
    pub store_id: String,
    /// Protocol version (TXT `proto`).
    pub protocol: u32,
}

/// Something discovery learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A peer announced itself or was resolved.
    Found {
        /// Its device id.
        device_id: DeviceId,
        /// Its name.
        name: String,
        /// Addresses to try, best first.
        addresses: Vec<String>,
        /// HTTP port.
        port: u16,
        /// Advertised store id.
        store_id: String,
        /// Advertised protocol version.
        protocol: u32,
    },
    /// A peer withdrew its advertisement.
    Lost {
        /// Its device id.
        device_id: DeviceId,
    },
}

/// Discovery failures.
#[derive(Debug, Error)]
pub enum DiscoveryError {
    /// The discovery mechanism could not start (e.g. no multicast interface).
    #[error("discovery unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("discovery failed: {0}")]
    Unexpected(String),
}

/// Receives discovery events. Must not block: adapters call it from their own threads.
pub trait DiscoverySink: Send + Sync + 'static {
    /// Handles one event.
    fn on_event(&self, event: DiscoveryEvent);
}

/// Advertises this terminal and reports peers.
#[async_trait::async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Starts advertising and browsing; events go to `sink` until
    /// [`Discovery::shutdown`].
    ///
    /// # Errors
    /// [`DiscoveryError::Unavailable`] when it cannot start.
    async fn start(&self, ad: Advertisement, sink: std::sync::Arc<dyn DiscoverySink>) -> Result<(), DiscoveryError>;

    /// Withdraws the advertisement (goodbye) and stops browsing.
    async fn shutdown(&self);
}
