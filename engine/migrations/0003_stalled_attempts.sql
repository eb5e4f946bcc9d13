-- Claims since the job last committed a batch: the attempt limit counts these, so a job that keeps
-- making progress survives any number of worker deaths, while one whose batch reliably kills its
-- worker (or fails) still gives up after BULKIO_MAX_ATTEMPTS claims. `attempts` stays the total.
ALTER TABLE jobs ADD COLUMN stalled_attempts integer NOT NULL DEFAULT 0;
