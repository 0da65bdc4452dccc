//! Peer protocol messages (`/peer/v1/…`), versioned. See `docs/PROTOCOL.md`.

use serde::{Deserialize, Serialize};

use crate::change::ChangeRecord;
use crate::clock::VectorClock;
use crate::ids::DeviceId;

/// Protocol version spoken by this build; peers with another major version are not synced.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default number of changes in one pull batch.
pub const SYNC_BATCH_SIZE: usize = 100;

/// Largest batch a terminal serves or accepts, whatever is asked.
pub const MAX_BATCH_SIZE: usize = 1_000;

/// Default bound on one batch's encoded size in bytes.
pub const SYNC_BATCH_BYTES: usize = 1 << 20;

/// Who a terminal is: the answer to `GET /peer/v1/hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloV1 {
    /// Always `"tillmesh"`, to tell terminals from other HTTP servers.
    pub service: String,
    /// The terminal's device id.
    pub device_id: DeviceId,
    /// Its human name.
    pub name: String,
    /// Its protocol version.
    pub protocol: u32,
    /// Public id of its store (derived from the store key; never the key).
    pub store_id: String,
    /// Its HTTP port, so a puller can record how to reach it.
    pub port: u16,
}

/// "Give me your changes after log position `after`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestV1 {
    /// The puller's device id.
    pub device_id: DeviceId,
    /// Resume after this position of the server's log (0 = from the start).
    pub after: u64,
    /// At most this many changes (the server caps it at [`MAX_BATCH_SIZE`]).
    pub limit: u32,
    /// At most about this many bytes of changes (at least one change is always sent).
    pub max_bytes: u64,
    /// Per origin, the highest sequence the puller already holds: the server skips
    /// those, so changes never bounce back to where they came from.
    pub known: VectorClock,
}

/// A batch of changes in the server's log order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponseV1 {
    /// The server's device id.
    pub device_id: DeviceId,
    /// The changes, each with its checksum.
    pub changes: Vec<ChangeRecord>,
    /// Log position to resume from (the puller's new cursor once it applied the batch).
    pub next: u64,
    /// Whether more changes follow `next`.
    pub has_more: bool,
    /// The server's log length, to estimate pending work.
    pub head: u64,
}
