ALTER TABLE local_identity DROP COLUMN writer_retired;
ALTER TABLE local_identity DROP COLUMN writer_since;
ALTER TABLE local_identity DROP COLUMN writer_marker;
ALTER TABLE local_identity DROP COLUMN writer_id;
