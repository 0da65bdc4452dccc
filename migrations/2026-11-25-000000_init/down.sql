-- Drops everything up.sql created, in reverse order.
DROP TABLE notifications;
DROP INDEX offline_queue_due;
DROP TABLE offline_queue;
DROP INDEX conflicts_by_entity;
DROP TABLE conflicts;
DROP TABLE peer_cursors;
DROP TABLE origin_progress;
DROP TABLE change_log;
DROP TABLE entities;
DROP TABLE devices;
DROP TABLE local_identity;
