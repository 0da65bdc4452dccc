//! Ports: the interfaces the application needs from the outside world. Adapters
//! implement them (SQLite, mDNS, HTTP, system clock); fakes implement them for tests.

pub mod clock;
pub mod discovery;
pub mod store;
pub mod transport;

pub use clock::{Clock, JitterSource};
pub use discovery::{Advertisement, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySink};
pub use store::{
    ApplyOutcome, ChangePage, ChangePageJson, DeviceStore, EntityStore, LocalOutcome, NotificationStore, Outbox,
    PeerSyncState, QueueStore, Store, StoreDigest, StoreError, SyncStore, WriterRecord,
};
pub use transport::{PeerTransport, TransportError};
