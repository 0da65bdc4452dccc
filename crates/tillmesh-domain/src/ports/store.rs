//! Storage ports: entities and their change log, per-peer cursors, devices, the
//! offline queue and notifications. One implementation is durable (SQLite files);
//! others may be memory-backed, and all must pass the same conformance suite.

use thiserror::Error;

use crate::change::EncodedChange;
use crate::checksum::Checksum;
use crate::clock::VectorClock;
use crate::conflict::{Conflict, ConflictId};
use crate::device::DeviceRecord;
use crate::entity::{EntityOp, EntityState};
use crate::error::DomainError;
use crate::ids::{DeviceId, EntityKey};
use crate::queue::{NewOperation, Notification, OperationStatus, QueueStats, QueuedOperation};
use crate::time::Timestamp;

/// Storage failures callers branch on.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The operation was rejected by the domain (bad op, kind mismatch, overflow) and
    /// nothing was written.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// A change in a remote batch failed checksum or validation; nothing was applied.
    #[error("rejected batch: {0}")]
    BadBatch(DomainError),
    /// The writer a local write named was retired (a peer holds more of it than this
    /// log does): nothing was written; take a new writer and write again.
    #[error("writer {0} is retired: a peer holds more of its changes than this log")]
    WriterRetired(String),
    /// The named row does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The row exists but is in a state that forbids the operation.
    #[error("{0}")]
    InvalidState(String),
    /// Anything else (I/O, corruption). Callers report it and retry later.
    #[error("storage failure: {0}")]
    Unexpected(String),
}

/// Result of a local write.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalOutcome {
    /// For each op in order: the entity's key, its new state, and whether the op
    /// created it (it had no state before).
    pub entities: Vec<(EntityKey, EntityState, bool)>,
    /// For each op in order, the sequence number of the change it recorded (this
    /// device's origin); the records themselves are in the log.
    pub seqs: Vec<u64>,
}

/// Result of applying a remote batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplyOutcome {
    /// Changes that were new here.
    pub applied: usize,
    /// Changes already held (same origin and sequence): no-ops.
    pub duplicates: usize,
    /// Conflicts that opened because of this batch.
    pub new_conflicts: Vec<Conflict>,
    /// The batch held changes of this terminal's writer beyond its log, so the store
    /// retired that writer: take a new one before writing again.
    pub writer_retired: bool,
}

/// One page of the change log, each change as its JSON text (a serde_json
/// serialization of [`ChangeRecord`]), for relaying without decoding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangePageJson {
    /// The changes' JSON, in log order.
    pub changes: Vec<String>,
    /// Position to resume from.
    pub next: u64,
    /// Whether the log goes on after `next`.
    pub has_more: bool,
    /// The log's current length.
    pub head: u64,
    /// The store's coverage, read with the page ([`SyncStore::covered`]).
    pub covered: VectorClock,
}

/// One page of the change log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangePage {
    /// The changes, in log order, with their stored JSON.
    pub changes: Vec<EncodedChange>,
    /// Position to resume from.
    pub next: u64,
    /// Whether the log goes on after `next`.
    pub has_more: bool,
    /// The log's current length.
    pub head: u64,
    /// The store's coverage, read with the page ([`SyncStore::covered`]).
    pub covered: VectorClock,
}

/// The store's replicated state, summarised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDigest {
    /// Canonical hash of all entities' states.
    pub digest: Checksum,
    /// Number of entities (tombstones included).
    pub entities: u64,
    /// Number of open conflicts.
    pub open_conflicts: u64,
}

/// What this terminal knows of its sync with one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSyncState {
    /// The peer.
    pub device_id: DeviceId,
    /// Position in the peer's log pulled and applied so far.
    pub cursor: u64,
    /// The peer's log length as last reported.
    pub peer_head: u64,
    /// Last successful sync.
    pub last_sync: Option<Timestamp>,
    /// Error of the last attempt, if it failed.
    pub last_error: Option<String>,
    /// The peer's log epoch (its writer) the cursor was obtained under (`None`:
    /// never synced, or synced by a build that did not record it).
    pub epoch: Option<String>,
}

/// Derives, from a local batch's outcome, operations to queue with it (e.g. forwarding
/// the sales it created to head office).
pub type Outbox = Box<dyn FnOnce(&LocalOutcome) -> Vec<NewOperation> + Send>;

/// Entities and local writes.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait EntityStore: Send + Sync + 'static {
    /// Applies local ops made by `device` at `at`, atomically: every op's entity update
    /// and change record, or nothing.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] (nothing written) when any op is invalid.
    async fn apply_local(
        &self,
        device: &DeviceId,
        ops: Vec<(EntityKey, EntityOp)>,
        at: Timestamp,
    ) -> Result<LocalOutcome, StoreError>;

    /// [`EntityStore::apply_local`], and in the same transaction queues the operations
    /// `outbox` derives from the outcome, so a crash keeps both or neither.
    ///
    /// # Errors
    /// As [`EntityStore::apply_local`]; nothing is written or queued on error.
    async fn apply_local_with_outbox(
        &self,
        device: &DeviceId,
        ops: Vec<(EntityKey, EntityOp)>,
        at: Timestamp,
        outbox: Outbox,
    ) -> Result<LocalOutcome, StoreError>;

    /// An entity's state, if it was ever written.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn entity(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError>;

    /// Entities of one type ordered by id, after `after`, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn list_entities(
        &self,
        entity_type: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(EntityKey, EntityState)>, StoreError>;

    /// All open conflicts.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn open_conflicts(&self) -> Result<Vec<Conflict>, StoreError>;

    /// One open conflict.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn conflict(&self, id: &ConflictId) -> Result<Option<Conflict>, StoreError>;

    /// Canonical digest of the replicated state.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn digest(&self) -> Result<StoreDigest, StoreError>;
}

/// The change log and per-peer sync bookkeeping.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait SyncStore: Send + Sync + 'static {
    /// Log entries after position `after`, skipping changes whose sequence is at or
    /// below `known[origin]`; at most `limit` changes and about `max_bytes` (always at
    /// least one when any is left).
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn changes_after(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
        known: &VectorClock,
    ) -> Result<ChangePage, StoreError>;

    /// [`SyncStore::changes_after`] with each change as JSON text. Stores that keep
    /// records as JSON return it as stored, so serving a pull costs no decoding; the
    /// puller verifies every checksum anyway.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn changes_after_json(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
        known: &VectorClock,
    ) -> Result<ChangePageJson, StoreError> {
        let page = self.changes_after(after, limit, max_bytes, known).await?;
        let changes = page.changes.into_iter().map(EncodedChange::into_json).collect();
        Ok(ChangePageJson { changes, next: page.next, has_more: page.has_more, head: page.head, covered: page.covered })
    }

    /// Applies a peer's batch and advances that peer's cursor to `next` and its
    /// head to `peer_head`, in one transaction. Changes already held are no-ops.
    /// `covered`: the peer's coverage, given with the batch that reached its head; it
    /// is added to this store's (up to the highest sequence of each writer held).
    /// `epoch`: the peer's log epoch the cursor now belongs to (kept with it).
    ///
    /// # Errors
    /// [`StoreError::BadBatch`] and nothing applied (cursor unchanged) if any change
    /// fails checksum or validation.
    async fn apply_remote(
        &self,
        peer: &DeviceId,
        changes: Vec<EncodedChange>,
        next: u64,
        peer_head: u64,
        covered: Option<VectorClock>,
        epoch: Option<String>,
    ) -> Result<ApplyOutcome, StoreError>;

    /// This store's coverage: per writer, a sequence up to which it holds every change
    /// of that writer — the recorded coverage, and for this terminal's own writers
    /// the highest sequence held. What a puller announces as `known`.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn covered(&self) -> Result<VectorClock, StoreError>;

    /// Per origin, the highest sequence held.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn known_origins(&self) -> Result<VectorClock, StoreError>;

    /// Length of this terminal's log.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn log_head(&self) -> Result<u64, StoreError>;

    /// Sync state of one peer (cursor 0 and nothing else when never synced).
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn peer_state(&self, peer: &DeviceId) -> Result<PeerSyncState, StoreError>;

    /// Sync state of every peer ever synced with.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn peer_states(&self) -> Result<Vec<PeerSyncState>, StoreError>;

    /// Records the end of a sync attempt with `peer`: success time, or the error.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn record_sync_result(&self, peer: &DeviceId, at: Timestamp, error: Option<String>)
        -> Result<(), StoreError>;
}

/// The writer a terminal writes its changes under, as stored in its data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterRecord {
    /// `<device id>.<incarnation>`.
    pub writer: DeviceId,
    /// What ties the writer to this machine and this database file (a copy or a
    /// restored backup has another marker, so it takes a new writer).
    pub marker: String,
    /// Log length when the writer was taken: the start of its log epoch.
    pub since: u64,
    /// A peer turned out to hold more of this writer than the log does: it must not
    /// write again.
    pub retired: bool,
}

/// This terminal's identity and the device registry.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// This terminal's device id: the stored one, or `fresh` stored now on first start.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn local_device_id(&self, fresh: DeviceId) -> Result<DeviceId, StoreError>;

    /// The writer this terminal writes under, if one was taken.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn writer(&self) -> Result<Option<WriterRecord>, StoreError>;

    /// Takes `writer` as this terminal's writer from now on, tied to `marker`, its
    /// epoch starting at `since` (at most the current log length; `None`: the current
    /// log length).
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] when the log already holds changes of `writer`
    /// (a writer is never taken twice); [`StoreError::Unexpected`].
    async fn take_writer(
        &self,
        writer: DeviceId,
        marker: String,
        since: Option<u64>,
    ) -> Result<WriterRecord, StoreError>;

    /// A peer holds `writer`'s changes up to `seq`. When `writer` is this terminal's
    /// writer and `seq` is beyond what its log holds, the log lost changes that peers
    /// have (a rollback): the writer is retired, so that no sequence number or dot of
    /// it is used twice. Returns whether the writer is retired.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn note_held_elsewhere(&self, writer: &DeviceId, seq: u64) -> Result<bool, StoreError>;

    /// Inserts or replaces a device. Its source never moves to a weaker one
    /// ([`crate::device::DeviceSource::rank`]: `self` > `manual` > `mdns` > `peer`).
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn upsert_device(&self, device: DeviceRecord) -> Result<(), StoreError>;

    /// Marks a device as heard from at `at` (never moves `last_seen` backwards).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown device.
    async fn touch_device(&self, id: &DeviceId, at: Timestamp) -> Result<(), StoreError>;

    /// One device.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError>;

    /// All devices, ordered by id.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
}

/// The persistent offline queue.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Stores a new pending operation due at its creation time.
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] if the id exists.
    async fn enqueue(&self, op: NewOperation) -> Result<QueuedOperation, StoreError>;

    /// Pending operations due at or before `now`, by `next_attempt_at`.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<QueuedOperation>, StoreError>;

    /// Moves a pending operation to processing; `false` if it was not pending (someone
    /// else claimed it), so one operation is never attempted twice at once.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn mark_processing(&self, id: &str) -> Result<bool, StoreError>;

    /// Marks a processing operation delivered (counting the attempt).
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    async fn mark_completed(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Records a failed attempt: back to pending due at `retry_at`, or `failed` for
    /// good when `retry_at` is `None`. Returns the updated operation.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    async fn mark_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<QueuedOperation, StoreError>;

    /// Operations, newest first, optionally of one status.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn operations(
        &self,
        status: Option<OperationStatus>,
        limit: usize,
    ) -> Result<Vec<QueuedOperation>, StoreError>;

    /// One operation.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn operation(&self, id: &str) -> Result<Option<QueuedOperation>, StoreError>;

    /// Counts by status.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn stats(&self) -> Result<QueueStats, StoreError>;

    /// Puts a failed operation back to pending with attempts reset, due at `now`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or [`StoreError::InvalidState`] if it is not failed.
    async fn retry(&self, id: &str, now: Timestamp) -> Result<QueuedOperation, StoreError>;

    /// Cancels a pending or failed operation.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or [`StoreError::InvalidState`] otherwise.
    async fn cancel(&self, id: &str) -> Result<QueuedOperation, StoreError>;

    /// Returns operations left `processing` by a crash to `pending`; the count.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn recover_processing(&self) -> Result<u64, StoreError>;
}

/// Operator notifications.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Stores a notification.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn add_notification(&self, n: Notification) -> Result<(), StoreError>;

    /// Notifications, newest first.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`].
    async fn notifications(&self, limit: usize) -> Result<Vec<Notification>, StoreError>;

    /// Acknowledges one.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    async fn acknowledge(&self, id: &str) -> Result<Notification, StoreError>;
}

/// Everything the app needs from storage.
pub trait Store: EntityStore + SyncStore + DeviceStore + QueueStore + NotificationStore {}

impl<T: EntityStore + SyncStore + DeviceStore + QueueStore + NotificationStore> Store for T {}
