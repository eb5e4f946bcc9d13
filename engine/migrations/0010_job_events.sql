-- Jobs as a resource (issue #10): the indexes of GET /v1/jobs and each job's event log.

-- GET /v1/jobs lists newest first with a keyset cursor on (created_at, id) (engine/job_list.py):
-- one index per scope (an owner's jobs; an admin's view of everyone's), and the same with
-- `status` before the order, so that a filter on a rare status (failed, running) still reads one
-- page of index entries instead of walking past every completed job. kind and resource are
-- INCLUDEd: a page's ids come from an index-only scan that checks them on the index entries,
-- and only the page's own rows are read from the table. Without owner in the admin indexes, an
-- owner's list cannot be served by walking everyone's newest jobs (which the planner might pick
-- for an owner of many jobs, and which reads without bound when those jobs are old).
-- jobs_owner_created_idx is a prefix of jobs_owner_list_idx.
CREATE INDEX jobs_owner_list_idx ON jobs (owner, created_at DESC, id DESC)
    INCLUDE (kind, resource);
CREATE INDEX jobs_list_idx ON jobs (created_at DESC, id DESC) INCLUDE (kind, resource);
CREATE INDEX jobs_owner_status_list_idx ON jobs (owner, status, created_at DESC, id DESC)
    INCLUDE (kind, resource);
CREATE INDEX jobs_status_list_idx ON jobs (status, created_at DESC, id DESC)
    INCLUDE (kind, resource);
DROP INDEX jobs_owner_created_idx;

-- Append-only, one row per event, numbered per job without gaps from 1 (engine/events.py).
-- Written only by the triggers below, in the transaction of the state change that causes the
-- event; deleted with the job (retention).
CREATE TABLE job_events (
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    type text NOT NULL CHECK (type IN ('queued', 'started', 'progress', 'warning', 'retrying',
                                       'completed', 'failed', 'cancelled')),
    data jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, seq)
);
-- The last event's seq: the jobs row is locked by every update that writes events, so numbers
-- are handed out one transaction at a time.
ALTER TABLE jobs ADD COLUMN event_seq integer NOT NULL DEFAULT 0;

-- Counters as events carry them; rows_per_sec over the job's running time so far.
CREATE FUNCTION bulkio_job_counters(j jobs) RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object(
        'processed', j.processed, 'successful', j.successful, 'failed', j.failed,
        'error_count', j.error_count, 'inserted', j.inserted, 'updated', j.updated,
        'bytes_read', j.bytes_read, 'total_bytes', j.total_bytes,
        'rows_per_sec', CASE WHEN s.secs > 0 THEN round(j.processed / s.secs, 1) END)
    FROM (SELECT extract(epoch FROM coalesce(j.finished_at, clock_timestamp()) - j.started_at)
                 AS secs) AS s
$$;

CREATE FUNCTION bulkio_job_terminal(j jobs) RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT bulkio_job_counters(j) || jsonb_build_object(
        'status', j.status, 'total_records', j.total_records,
        'duration_ms', (extract(epoch FROM j.finished_at - j.started_at) * 1000)::bigint)
        || CASE WHEN j.status = 'failed' THEN jsonb_build_object('error', j.error) ELSE '{}' END
        || CASE WHEN j.result_bytes IS NOT NULL
                THEN jsonb_build_object('result_bytes', j.result_bytes) ELSE '{}' END
$$;

-- Existing jobs: what can still be told of them (queued, started, the end), before the triggers.
INSERT INTO job_events (job_id, seq, type, data, created_at)
SELECT j.id, row_number() OVER (PARTITION BY j.id ORDER BY e.n), e.type, e.data, e.at
FROM jobs AS j
CROSS JOIN LATERAL (VALUES
    (1, 'queued', jsonb_build_object('kind', j.kind, 'resource', j.resource, 'format', j.format,
                                     'mode', j.mode), j.created_at),
    (2, CASE WHEN j.started_at IS NOT NULL THEN 'started' END,
        jsonb_build_object('attempt', 1), j.started_at),
    (3, CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.status END,
        bulkio_job_terminal(j), coalesce(j.finished_at, j.updated_at))
) AS e (n, type, data, at)
WHERE e.type IS NOT NULL;
UPDATE jobs AS j SET event_seq = e.last
FROM (SELECT job_id, max(seq) AS last FROM job_events GROUP BY job_id) AS e
WHERE e.job_id = j.id;

-- Each change of a job row yields its events (in this order, several in one update possible):
--   attempts up: `started` (first claim) or `retrying` (a later claim: the previous worker was
--   lost, or it handed the job back or hit a retryable error); counters or the checkpoint moved:
--   `progress` (once per committed import batch, per saved export progress); a new warning:
--   `warning`; a terminal status: `completed` / `failed` / `cancelled` with the final counters.
-- A BEFORE trigger so that event_seq is stored in the same row version; the `queued` event of a
-- new job is written AFTER INSERT (its foreign key needs the row).
CREATE FUNCTION bulkio_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    types text[] := '{}';
    payloads jsonb[] := '{}';
    added_types text[];
    added_payloads jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.event_seq := 1;
        RETURN NEW;
    END IF;
    IF NEW.attempts > OLD.attempts THEN
        IF OLD.started_at IS NULL THEN
            types := types || 'started'::text;
            payloads := payloads || jsonb_build_object('attempt', NEW.attempts);
        ELSE
            types := types || 'retrying'::text;
            payloads := payloads || jsonb_build_object(
                'attempt', NEW.attempts,
                'reason', CASE WHEN OLD.status = 'running' THEN 'worker_lost' ELSE 'requeued' END);
        END IF;
    END IF;
    IF NEW.next_batch <> OLD.next_batch OR NEW.processed <> OLD.processed
       OR NEW.bytes_read <> OLD.bytes_read THEN
        types := types || 'progress'::text;
        payloads := payloads || (bulkio_job_counters(NEW) || CASE WHEN NEW.kind = 'import'
            THEN jsonb_build_object('batches', NEW.next_batch) ELSE '{}' END);
    END IF;
    IF NEW.warnings IS DISTINCT FROM OLD.warnings THEN
        SELECT coalesce(array_agg('warning'::text), '{}'),
               coalesce(array_agg(jsonb_build_object('message', w) ORDER BY n), '{}')
        INTO added_types, added_payloads
        FROM unnest(NEW.warnings) WITH ORDINALITY AS u (w, n)
        WHERE w <> ALL (OLD.warnings);
        types := types || added_types;
        payloads := payloads || added_payloads;
    END IF;
    IF NEW.status IN ('completed', 'failed', 'cancelled')
       AND OLD.status NOT IN ('completed', 'failed', 'cancelled') THEN
        types := types || NEW.status;
        payloads := payloads || bulkio_job_terminal(NEW);
    END IF;
    IF cardinality(types) > 0 THEN
        INSERT INTO job_events (job_id, seq, type, data)
        SELECT NEW.id, OLD.event_seq + e.n, e.type, e.data
        FROM unnest(types, payloads) WITH ORDINALITY AS e (type, data, n);
        NEW.event_seq := OLD.event_seq + cardinality(types);
        PERFORM pg_notify('bulkio_job_events', NEW.id::text);
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION bulkio_job_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, seq, type, data)
    VALUES (NEW.id, 1, 'queued', jsonb_build_object('kind', NEW.kind, 'resource', NEW.resource,
                                                    'format', NEW.format, 'mode', NEW.mode));
    PERFORM pg_notify('bulkio_job_events', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_events BEFORE INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION bulkio_job_events();
CREATE TRIGGER jobs_events_queued AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION bulkio_job_queued();
