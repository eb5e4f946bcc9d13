-- Webhooks (issue #10): endpoints per owner, an outbox of deliveries written in the transaction
-- that ends a job, and every attempt to send one (engine/webhooks.py).

-- A receiver of an owner's job events. `secret` signs (Standard Webhooks, `whsec_` + base64);
-- after a rotation `previous_secret` signs too until `previous_expires`.
CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY,
    owner text NOT NULL,
    url text NOT NULL,
    event_types text[] NOT NULL,
    description text NOT NULL DEFAULT '',
    secret text NOT NULL,
    previous_secret text,
    previous_expires timestamptz,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_owner_idx ON webhook_endpoints (owner, created_at, id);

-- The outbox: one row per (endpoint, job end). `id` is the message's webhook-id, the same on
-- every attempt. A pending row is due at `next_attempt_at`; a worker that takes it moves
-- `next_attempt_at` to the end of its lease, so a row whose worker died is due again then.
-- `tries` counts the attempts of the current retry schedule (a redelivery starts a new one),
-- `attempts` every attempt ever (their numbers in webhook_attempts).
CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    event_type text NOT NULL,
    data jsonb NOT NULL,
    event_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    tries integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    lease_owner text,
    lease_token uuid,
    leased_at timestamptz,
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (endpoint_id, job_id, event_type)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
-- GET /v1/webhooks/{id}/deliveries: newest first, a keyset cursor on (created_at, id).
CREATE INDEX webhook_deliveries_endpoint_idx
    ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
-- ON DELETE CASCADE from jobs (retention) finds a job's deliveries by this index.
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id);

-- Every attempt: when, how long, the answer's status or the error.
CREATE TABLE webhook_attempts (
    delivery_id text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    n integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms integer,
    status_code integer,
    error text,
    worker text,
    PRIMARY KEY (delivery_id, n)
);

-- A job's terminal event (written by the jobs trigger of migration 0010, in the transaction of
-- the update that ends the job) puts one delivery per matching enabled endpoint of the job's
-- owner into the outbox: the job cannot end without its deliveries, nor have deliveries
-- without ending. NOTIFY wakes the workers' delivery loops at commit.
CREATE FUNCTION bulkio_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    added integer;
BEGIN
    INSERT INTO webhook_deliveries (id, endpoint_id, job_id, event_type, data, event_at,
                                    next_attempt_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, j.id,
           j.kind || '.' || NEW.type,
           NEW.data || jsonb_build_object('job_id', j.id, 'kind', j.kind,
                                          'resource', j.resource, 'format', j.format,
                                          'mode', j.mode),
           NEW.created_at, clock_timestamp()
    FROM jobs AS j
    JOIN webhook_endpoints AS e
      ON e.owner = j.owner AND e.enabled AND (j.kind || '.' || NEW.type) = ANY (e.event_types)
    WHERE j.id = NEW.job_id
    ON CONFLICT (endpoint_id, job_id, event_type) DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        PERFORM pg_notify('bulkio_webhooks', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_events_webhooks AFTER INSERT ON job_events
    FOR EACH ROW WHEN (NEW.type IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION bulkio_webhook_outbox();
