-- tillmesh storage schema v6: a device may be learned from another member ('peer').
CREATE TABLE devices_v2 (
    device_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('self', 'mdns', 'manual', 'peer')),
    trusted BOOLEAN NOT NULL
);
INSERT INTO devices_v2 SELECT device_id, name, address, port, last_seen, source, trusted FROM devices;
DROP TABLE devices;
ALTER TABLE devices_v2 RENAME TO devices;

-- The peer's log epoch (its writer) the cursor was obtained under, kept with the
-- cursor: a puller that restarts knows whether the peer's log is still the one its
-- cursor points into, and rewinds only when it is not.
ALTER TABLE peer_cursors ADD COLUMN cursor_epoch TEXT;
