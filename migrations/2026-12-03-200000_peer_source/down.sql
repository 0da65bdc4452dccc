ALTER TABLE peer_cursors DROP COLUMN cursor_epoch;
CREATE TABLE devices_v1 (
    device_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('self', 'mdns', 'manual')),
    trusted BOOLEAN NOT NULL
);
INSERT INTO devices_v1 SELECT device_id, name, address, port, last_seen,
    CASE source WHEN 'peer' THEN 'manual' ELSE source END, trusted FROM devices;
DROP TABLE devices;
ALTER TABLE devices_v1 RENAME TO devices;
