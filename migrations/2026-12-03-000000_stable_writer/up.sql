-- tillmesh storage schema v4: one writer per data dir, kept across restarts.

-- The writer this terminal writes under (`<device id>.<incarnation>`), kept until
-- continuity cannot be proved: `writer_marker` ties it to this machine and this
-- database file (a copy or a restored backup has another), `writer_since` is the log
-- length when it was taken (its log epoch's start), and `writer_retired` is set when a
-- peer turned out to hold more of it than this log does (a rollback the marker could
-- not see), so the next local write takes a new one first.
ALTER TABLE local_identity ADD COLUMN writer_id TEXT;
ALTER TABLE local_identity ADD COLUMN writer_marker TEXT;
ALTER TABLE local_identity ADD COLUMN writer_since INTEGER;
ALTER TABLE local_identity ADD COLUMN writer_retired BOOLEAN NOT NULL DEFAULT 0;
