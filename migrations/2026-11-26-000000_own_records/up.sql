-- tillmesh storage schema v3: this terminal's own records skip the (origin, seq) index.

-- UNIQUE (origin, seq) made every local write insert into a second B-tree (and write
-- its pages at each commit) although it only serves to drop records received twice.
-- This terminal numbers its own records one past its progress, so for its own origin
-- "held" is simply "seq <= progress"; only other origins need the index.
CREATE TABLE change_log_v3 (
    pos INTEGER PRIMARY KEY,               -- local log position, 1, 2, 3, ... (rows are never deleted)
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record TEXT NOT NULL,                  -- serde_json of the whole ChangeRecord, checksum included
    own BOOLEAN NOT NULL                   -- origin is this terminal (local_identity.device_id)
);
INSERT INTO change_log_v3 (pos, origin, seq, record, own)
    SELECT pos, origin, seq, record, origin IS (SELECT device_id FROM local_identity) FROM change_log;
DROP TABLE change_log;
ALTER TABLE change_log_v3 RENAME TO change_log;
-- Finds a received record of another origin by (origin, seq), and refuses it twice.
CREATE UNIQUE INDEX change_log_received ON change_log (origin, seq) WHERE NOT own;
