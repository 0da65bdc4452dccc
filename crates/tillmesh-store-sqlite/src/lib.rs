//! SQLite storage adapter of tillmesh: owns the database schema (the workspace's
//! top-level `migrations/`, embedded and run on open) and [`SqliteStore`], the
//! implementation of every storage port of `tillmesh_domain::ports::store`
//! (entities and local writes, the change log and sync cursors, devices, the offline
//! queue, notifications) on diesel + bundled SQLite.
//!
//! Architecture invariant: this crate depends on the domain and its own technology
//! (diesel, SQLite, tokio's blocking pool) only. It must not depend on other adapters
//! or the app.
//!
//! # Two back-ends, one code path
//! [`SqliteStore::open`] opens a durable file; [`SqliteStore::open_in_memory`] is the
//! memory-backed implementation (a private `:memory:` database) for in-process
//! harnesses. Both run the same SQL and pass the same conformance suite.
//!
//! # Connections and transactions
//! Every connection gets `busy_timeout` = 5 s, `synchronous = NORMAL` and
//! `foreign_keys = ON`; files use WAL. One writer connection sits behind a mutex
//! (SQLite serializes writers anyway) and every write is one `BEGIN IMMEDIATE`
//! transaction, so each port call is atomic. Writes that queue while another holds
//! the writer run together in the next transaction, each inside its own savepoint
//! (group commit): a failing write undoes only itself, and a write's result is handed
//! back only after its group committed. Files also get two read-only connections
//! that read a consistent snapshot beside the writer. All work runs on tokio's
//! blocking pool; hot statements use the diesel DSL, which caches prepared statements.
//! A batch's entity states are read 16 per statement, and its log records and entity
//! rows written 16 per `INSERT` (owned values, so diesel prepares each shape once);
//! received records are appended one by one, as each may be a duplicate.
//! A local batch of 32 ops or more shares its domain work (applying ops, hashing,
//! encoding records) with a second thread of the blocking pool, so a large write
//! uses both cores (see `local.rs`); every SQL statement stays on the writer.
//! A file store's WAL is checkpointed by a thread of its own with a fifth connection,
//! at most 250 ms after a commit, instead of inside whichever commit crossed SQLite's
//! size limit. The writer's own limit stays as a safety net at 32,000 pages (256 MB):
//! a long sync outruns the checkpointer, which syncs the WAL but cannot empty it
//! until the burst ends; the WAL file is cut back to 64 MB once a checkpoint emptied it.
//!
//! # Semantics worth knowing
//! * A change is held iff its `(origin, seq)` is in the log. `apply_remote` treats such
//!   changes as duplicates. Records of other origins are found by a UNIQUE index on
//!   `(origin, seq)`; this terminal's own records (`own`) are left out of it, as a
//!   local write takes the sequence after the progress: for its own origin, held
//!   means "sequence within the progress". Per-origin sequences normally arrive in
//!   increasing order with no gaps; if one arrives after a gap, it is applied and the
//!   origin's progress (in `known_origins`) moves to the maximum. A change inside the
//!   gap that arrives later is still applied (the join is idempotent) — except for
//!   this terminal's own origin, where it counts as held (such a gap needs this
//!   terminal to have lost data) — but pullers that skip by the known vector may
//!   never ask for it, so gaps must not be created on purpose.
//! * The log relays: records from peers keep their origin, sequence and checksum, so
//!   changes flow A → B → C.
//! * Nothing is stored twice. A log row holds the record's JSON (received records
//!   keep the text they came as); an entity row holds its state only when no record
//!   does, i.e. after a merge of concurrent changes. Otherwise `state` is NULL and the
//!   state is read from the record at `updated_pos` (local writes and superseding
//!   remote changes, by far the common cases).
//! * A received record for an entity the store does not hold yet is stored without
//!   decoding its state, when the text is in the form this build writes: its
//!   canonical bytes come straight from the text (`tillmesh_domain::entity::transcode`)
//!   and give the checksum check and the entity hash; the state is decoded only if a
//!   later change in the same batch touches the entity or the state may hold a
//!   conflict (to derive conflict rows).
//! * `apply_local_with_outbox` queues the operations derived from a batch (new sales
//!   for head office) in the batch's transaction.
//! * Conflict rows are derived: rebuilt from `EntityState::conflicts` whenever an
//!   entity's state changes, never written otherwise.
//! * `changes_after` examines at most `clamp(limit × 20, 1 000, 10 000)` log rows
//!   (or `limit` if larger) per call; `next` covers skipped rows too, and `has_more`
//!   tells the puller to come back.
//! * Queue: `mark_completed` and `mark_failed` accept a `processing` (or still
//!   `pending`) operation and answer [`StoreError::InvalidState`] for a finished
//!   one. `updated_at` is the latest instant a caller passed in.
//!
//! [`StoreError::InvalidState`]: tillmesh_domain::ports::StoreError::InvalidState

mod devices;
mod entities;
mod json;
mod local;
mod notifications;
mod queue;
mod schema;
mod store;
mod sync;

pub use store::{SqliteStore, CONNECTION_PRAGMAS};
