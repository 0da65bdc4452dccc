-- Deleted records do not come back; the log stays compacted.
DROP TABLE coverage;
ALTER TABLE entities DROP COLUMN older_pos;
