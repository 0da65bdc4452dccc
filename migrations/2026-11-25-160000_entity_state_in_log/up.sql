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
