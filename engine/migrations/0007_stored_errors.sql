-- Error rows stored per job: BULKIO_MAX_ERROR_ROWS caps them (engine/imports/load.py), while
-- error_count still counts every error. Each batch adds to it in its own transaction, with its
-- rows. Every job before this migration stored all of its error rows.
ALTER TABLE jobs ADD COLUMN stored_errors bigint NOT NULL DEFAULT 0;
UPDATE jobs SET stored_errors = error_count WHERE error_count <> 0;
