-- tillmesh storage schema v5: the change log keeps only what a puller still needs.
--
-- A record superseded by a later record of the same entity that includes it is
-- deleted, so the log holds about one record per live entity: the one at the entity
-- row's `updated_pos`, plus, while concurrent writes are merged, the other records
-- whose join the entity's state is (`older_pos`). Positions are never reused: the row
-- at the highest position is always a live record.

-- Positions (comma-separated) of the entity's records other than the one at
-- `updated_pos` that its state still needs; NULL when that one record has it all.
ALTER TABLE entities ADD COLUMN older_pos TEXT;

-- The puller's coverage: per writer, every change up to `seq` is held (the entity
-- states include it). It is what pullers announce as `known`; unlike the highest
-- sequence held (`origin_progress`), it stays true when logs serve a writer's changes
-- out of order, as compacted logs do. Under protocol 2 a log served each writer's
-- changes in order without gaps, so the highest sequence held was covered: start
-- from it.
CREATE TABLE coverage (
    origin TEXT PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO coverage (origin, seq) SELECT origin, max_seq FROM origin_progress;

-- Compact what older builds kept: an entity whose state is the one in its latest
-- record (`state` NULL, or the same clock — a state with that record's clock holds
-- nothing else) keeps that record only; an entity with a merged state keeps them all.
CREATE TEMP TABLE log_keys AS
    SELECT pos,
           json_extract(record, '$.key.entity_type') AS entity_type,
           json_extract(record, '$.key.entity_id') AS entity_id
    FROM change_log;
CREATE INDEX temp.log_keys_by_entity ON log_keys (entity_type, entity_id);
CREATE TEMP TABLE whole AS
    SELECT e.entity_type, e.entity_id, e.updated_pos FROM entities e
    LEFT JOIN change_log c ON c.pos = e.updated_pos
    WHERE e.state IS NULL
       OR json_extract(e.state, '$.context') = json_extract(c.record, '$.state.context');
CREATE INDEX temp.whole_by_entity ON whole (entity_type, entity_id);
UPDATE entities SET older_pos = (
    SELECT group_concat(k.pos, ',') FROM log_keys k
    WHERE k.entity_type = entities.entity_type AND k.entity_id = entities.entity_id
      AND k.pos <> entities.updated_pos
) WHERE NOT EXISTS (
    SELECT 1 FROM whole w WHERE w.entity_type = entities.entity_type AND w.entity_id = entities.entity_id
);
DELETE FROM change_log WHERE pos IN (
    SELECT k.pos FROM log_keys k JOIN whole w
        ON w.entity_type = k.entity_type AND w.entity_id = k.entity_id
    WHERE k.pos <> w.updated_pos
) AND pos <> (SELECT max(pos) FROM change_log);
DROP TABLE temp.whole;
DROP TABLE temp.log_keys;
