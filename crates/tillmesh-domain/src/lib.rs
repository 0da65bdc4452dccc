//! Pure domain of tillmesh: vector clocks, the replicated entity model and its merge,
//! change records with canonical encoding and SHA-256 checksums, retry and liveness
//! policies, the peer wire types, and the ports (traits) that adapters implement.
//!
//! Architecture invariant: this crate depends on no other workspace crate and on no
//! runtime, database, HTTP or mDNS library. It reads no clock and no random source;
//! time and randomness come in as arguments or through the [`ports`].
#![warn(missing_docs)]

pub mod backoff;
pub mod canonical;
pub mod change;
pub mod checksum;
pub mod clock;
pub mod conflict;
pub mod device;
pub mod digest;
pub mod dotmap;
pub mod entity;
pub mod error;
pub mod ids;
pub mod liveness;
pub mod ports;
pub mod queue;
pub mod time;
pub mod wire;

pub use backoff::BackoffPolicy;
pub use change::{ChangeRecord, EncodedChange, ReceivedState, RecordHeader, VerifiedChange};
pub use checksum::{calculate_checksum, verify_checksum, Checksum};
pub use clock::{ClockOrdering, VectorClock};
pub use conflict::{Conflict, ConflictId};
pub use dotmap::DotMap;
pub use entity::{EntityOp, EntityState, EntityView};
pub use error::DomainError;
pub use ids::{DeviceId, Dot, EntityKey};
pub use liveness::{LivenessPolicy, LivenessStatus};
pub use time::Timestamp;
