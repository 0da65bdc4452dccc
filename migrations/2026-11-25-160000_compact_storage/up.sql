-- tillmesh storage schema v2: nothing is stored twice.

-- Entity rows stop repeating what the change log holds: a local write's state, or a
-- remote change that superseded the entity, is exactly the state inside the record at
-- `updated_pos`, so `state` is NULL then and readers take it from that record. Only a
-- merge of concurrent states (which no record holds) is stored here.
CREATE TABLE entities_v2 (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    state TEXT,                   -- serde_json of EntityState; NULL: the state in change_log.record at updated_pos
    state_hash BLOB NOT NULL,     -- digest::entity_hash (32 bytes), folded by digest()
    deleted BOOLEAN NOT NULL,
    updated_pos INTEGER NOT NULL, -- change_log.pos of the last change that modified it
    PRIMARY KEY (entity_type, entity_id)
) WITHOUT ROWID;
INSERT INTO entities_v2 (entity_type, entity_id, state, state_hash, deleted, updated_pos)
    SELECT entity_type, entity_id, state, state_hash, deleted, updated_pos FROM entities;
DROP TABLE entities;
ALTER TABLE entities_v2 RENAME TO entities;

-- The log row keeps what paging and de-duplication need; the entity key and the byte
-- size are inside / of the record text.
CREATE TABLE change_log_v2 (
    pos INTEGER PRIMARY KEY,               -- local log position, 1, 2, 3, ... (rows are never deleted)
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record TEXT NOT NULL,                  -- serde_json of the whole ChangeRecord, checksum included
    UNIQUE (origin, seq)
);
INSERT INTO change_log_v2 (pos, origin, seq, record) SELECT pos, origin, seq, record FROM change_log;
DROP TABLE change_log;
ALTER TABLE change_log_v2 RENAME TO change_log;
