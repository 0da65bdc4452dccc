CREATE TABLE change_log_v1 (
    pos INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    record TEXT NOT NULL,
    size INTEGER NOT NULL,
    UNIQUE (origin, seq)
);
INSERT INTO change_log_v1 (pos, origin, seq, entity_type, entity_id, record, size)
    SELECT pos, origin, seq, json_extract(record, '$.key.entity_type'), json_extract(record, '$.key.entity_id'),
           record, octet_length(record)
    FROM change_log;
DROP TABLE change_log;
ALTER TABLE change_log_v1 RENAME TO change_log;

-- Back to a state in every row, copied out of the change log where it was NULL.
CREATE TABLE entities_v1 (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    state TEXT NOT NULL,
    state_hash BLOB NOT NULL,
    deleted BOOLEAN NOT NULL,
    updated_pos INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
) WITHOUT ROWID;
INSERT INTO entities_v1 (entity_type, entity_id, state, state_hash, deleted, updated_pos)
    SELECT e.entity_type, e.entity_id,
           COALESCE(e.state, (SELECT json_extract(l.record, '$.state') FROM change_log l WHERE l.pos = e.updated_pos)),
           e.state_hash, e.deleted, e.updated_pos
    FROM entities e;
DROP TABLE entities;
ALTER TABLE entities_v1 RENAME TO entities;
