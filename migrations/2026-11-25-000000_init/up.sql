-- tillmesh storage schema v1. Integers are SQLite 64-bit; timestamps are ms since the Unix epoch.

-- This terminal's own device id, fixed on first start (at most one row).
CREATE TABLE local_identity (
    singleton INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    device_id TEXT NOT NULL
);

-- Device registry: this terminal ('self') and peers found by mDNS or paired by hand.
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('self', 'mdns', 'manual')),
    trusted BOOLEAN NOT NULL
);

-- Current replicated state of every entity ever written or received, tombstones included.
CREATE TABLE entities (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    state TEXT NOT NULL,          -- serde_json of tillmesh_domain::EntityState
    state_hash BLOB NOT NULL,     -- digest::entity_hash (32 bytes), folded by digest()
    deleted BOOLEAN NOT NULL,
    updated_pos INTEGER NOT NULL, -- change_log.pos of the last change that modified it
    PRIMARY KEY (entity_type, entity_id)
) WITHOUT ROWID;

-- The change log: local changes and relayed remote ones, in the order this terminal took them.
CREATE TABLE change_log (
    pos INTEGER PRIMARY KEY,               -- local log position, 1, 2, 3, ... (rows are never deleted)
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    record TEXT NOT NULL,                  -- serde_json of the whole ChangeRecord, checksum included
    size INTEGER NOT NULL,                 -- byte length of record
    UNIQUE (origin, seq)
);

-- Per origin device, the highest change sequence held (the store's known vector).
CREATE TABLE origin_progress (
    origin TEXT PRIMARY KEY NOT NULL,
    max_seq INTEGER NOT NULL
) WITHOUT ROWID;

-- Per peer: how far its log was pulled and applied, its head, and the last sync attempt's outcome.
CREATE TABLE peer_cursors (
    device_id TEXT PRIMARY KEY NOT NULL,
    cursor INTEGER NOT NULL,
    peer_head INTEGER NOT NULL,
    last_sync INTEGER,
    last_error TEXT
);

-- Open conflicts, derived from entity states (EntityState::conflicts) and rebuilt when an entity changes.
CREATE TABLE conflicts (
    conflict_id TEXT PRIMARY KEY NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    field TEXT NOT NULL,
    conflict TEXT NOT NULL        -- serde_json of tillmesh_domain::Conflict
);
-- Finds an entity's conflicts when it is rebuilt.
CREATE INDEX conflicts_by_entity ON conflicts (entity_type, entity_id);

-- Offline queue: outbound operations waiting to be delivered; seq orders them by insertion.
CREATE TABLE offline_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,        -- JSON body
    status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL   -- latest instant a caller passed in (enqueue, completion, retry)
);
-- Finds due operations: status = 'pending' AND next_attempt_at <= now.
CREATE INDEX offline_queue_due ON offline_queue (status, next_attempt_at);

-- Operator notifications; seq orders them by insertion.
CREATE TABLE notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    operation_id TEXT,
    created_at INTEGER NOT NULL,
    acknowledged BOOLEAN NOT NULL
);
