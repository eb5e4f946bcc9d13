-- Retention (engine/retention.py) deletes finished jobs oldest first, in chunks:
-- `WHERE status = ANY(...) AND finished_at < $1 ORDER BY finished_at LIMIT n`. Without this index
-- every hourly run scans the whole jobs table.
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
