-- Back to one UNIQUE (origin, seq) over every record.
CREATE TABLE change_log_v2 (
    pos INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record TEXT NOT NULL,
    UNIQUE (origin, seq)
);
INSERT INTO change_log_v2 (pos, origin, seq, record) SELECT pos, origin, seq, record FROM change_log;
DROP TABLE change_log;
ALTER TABLE change_log_v2 RENAME TO change_log;
