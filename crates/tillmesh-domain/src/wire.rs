//! Peer protocol messages (`/peer/v1/…`), versioned. See `docs/PROTOCOL.md`.

use serde::{Deserialize, Serialize};

use crate::change::EncodedChange;
use crate::clock::VectorClock;
use crate::ids::DeviceId;

/// Protocol version spoken by this build; peers with another major version are not synced.
pub const PROTOCOL_VERSION: u32 = 3;

/// Default number of changes in one pull batch. Measured (100,000 POS-sized changes
/// between two terminals on one 2-core machine): 100 per batch 2.7 s, 500 2.3 s, 1,000
/// 2.1-2.2 s; each batch costs a round trip, a commit and a read of the known vector.
/// Storing 1,000 changes holds the writer for ~20 ms, which a sale can wait.
pub const SYNC_BATCH_SIZE: usize = 1_000;

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
    /// The puller's coverage: per writer, a sequence up to which the puller holds
    /// every change of that writer (its states include them). The server skips those,
    /// so changes never bounce back to where they came from.
    pub known: VectorClock,
    /// The puller's own HTTP port (0: not given), so that the server can pair back
    /// and pull from it in turn: pairing on either side makes both sides sync.
    #[serde(default)]
    pub port: u16,
}

/// A member of the store, as one member tells another (gossip of the trusted list, so
/// that one pairing joins the whole store). It is only a lead: the receiver trusts the
/// member once its own store-key handshake with it succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberV1 {
    /// Its device id.
    pub device_id: DeviceId,
    /// Its address as the teller reaches it.
    pub address: String,
    /// Its HTTP port.
    pub port: u16,
}

/// Media type of a pull answer written as lines ([`PullLinesHeaderV1`], then one record
/// per line), which a puller asks for with `Accept`. The records of a JSON answer must
/// be scanned to be told apart; lines are cut at their newlines, so the puller only
/// reads each record once. A server that cannot (a record holding a newline) or does
/// not know how answers JSON, as before.
pub const PULL_LINES_MEDIA_TYPE: &str = "application/x-ndjson";

/// First line of a pull answer written as lines: [`PullResponseV1`] without its
/// changes, which follow, `count` of them, each one line ending in `\n`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullLinesHeaderV1 {
    /// As [`PullResponseV1::device_id`].
    pub device_id: DeviceId,
    /// How many record lines follow.
    pub count: usize,
    /// As [`PullResponseV1::next`].
    pub next: u64,
    /// As [`PullResponseV1::has_more`].
    pub has_more: bool,
    /// As [`PullResponseV1::head`].
    pub head: u64,
    /// As [`PullResponseV1::log_epoch`].
    pub log_epoch: String,
    /// As [`PullResponseV1::epoch_start`].
    pub epoch_start: u64,
    /// As [`PullResponseV1::covered`].
    #[serde(default)]
    pub covered: VectorClock,
    /// As [`PullResponseV1::members`].
    #[serde(default)]
    pub members: Vec<MemberV1>,
}

/// A batch of changes in the server's log order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponseV1 {
    /// The server's device id.
    pub device_id: DeviceId,
    /// The changes, each with its checksum (kept with the JSON text they came as).
    pub changes: Vec<EncodedChange>,
    /// Log position to resume from (the puller's new cursor once it applied the batch).
    pub next: u64,
    /// Whether more changes follow `next`.
    pub has_more: bool,
    /// The server's log length, to estimate pending work.
    pub head: u64,
    /// Identifies the server's current run. Log positions up to `epoch_start` are
    /// history that any copy of the server's data dir shares; positions after it were
    /// written by this run. A cursor obtained in another run and beyond `epoch_start`
    /// may point into a log that was rolled back, restored or cloned since, so the
    /// puller rewinds it to `epoch_start`.
    #[serde(default)]
    pub log_epoch: String,
    /// The server's log length when this run started.
    #[serde(default)]
    pub epoch_start: u64,
    /// The server's coverage as of this answer (per writer, every change up to the
    /// sequence is in its states). A puller that applied everything up to the server's
    /// head holds all of it too, so it may add it to its own coverage then — and only
    /// then. Protocol 3.
    #[serde(default)]
    pub covered: VectorClock,
    /// The server's trusted members (the puller left out), with the answer that
    /// reaches its head; empty otherwise.
    #[serde(default)]
    pub members: Vec<MemberV1>,
}

/// Opens a peer session: the first step of the store-membership handshake
/// (`POST /peer/v1/session`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpenV1 {
    /// The client terminal's device id.
    pub client_device: DeviceId,
    /// 32 random bytes chosen by the client, hex.
    pub client_nonce: String,
}

/// The server's challenge: a fresh session id and nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionChallengeV1 {
    /// Session id (16 random bytes, hex).
    pub session_id: String,
    /// 32 random bytes chosen by the server, hex.
    pub server_nonce: String,
    /// The server terminal's device id.
    pub server_device: DeviceId,
}

/// The client's proof of knowing the store key (`POST /peer/v1/session/confirm`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfirmV1 {
    /// Session id from the challenge.
    pub session_id: String,
    /// HMAC-SHA-256 proof, hex.
    pub client_proof: String,
}

/// The server's proof of knowing the store key; the session is usable from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAcceptedV1 {
    /// HMAC-SHA-256 proof, hex.
    pub server_proof: String,
    /// Seconds of inactivity after which the server forgets the session.
    pub idle_timeout_secs: u64,
}

/// Starts joining a store with a one-time pairing code (`POST /peer/v1/join/start`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinStartV1 {
    /// The joining terminal's device id.
    pub client_device: DeviceId,
    /// The client's SPAKE2 message, hex.
    pub msg: String,
}

/// The server's SPAKE2 answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinChallengeV1 {
    /// Id of this join attempt (16 random bytes, hex).
    pub join_id: String,
    /// The server's SPAKE2 message, hex.
    pub msg: String,
    /// The server terminal's device id.
    pub server_device: DeviceId,
}

/// The client's key confirmation (`POST /peer/v1/join/finish`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinFinishV1 {
    /// Id of the join attempt.
    pub join_id: String,
    /// HMAC-SHA-256 key confirmation, hex.
    pub confirm: String,
}

/// The store key, sealed under the key both sides derived from the pairing code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrantV1 {
    /// The server's key confirmation, hex.
    pub server_confirm: String,
    /// The store key XOR an HMAC-SHA-256 keystream, hex.
    pub sealed_key: String,
    /// HMAC-SHA-256 over the sealed key, hex.
    pub tag: String,
}
