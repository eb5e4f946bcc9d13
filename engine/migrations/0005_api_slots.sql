-- Per-token slots held by API requests in progress (engine/limits.py): an upload being received
-- (counted by BULKIO_MAX_CONCURRENT_UPLOADS and, as the job it will become, by the token's
-- queued + running jobs limit) or a streaming export / error report being sent
-- (BULKIO_MAX_CONCURRENT_STREAMS). The API process holding a slot renews `expires_at` while the
-- request runs; a slot of a process that died stops counting when it expires.
-- UNLOGGED: slots live seconds to minutes and need no WAL; a database crash empties the table,
-- which at worst lets a token briefly exceed a cap while its requests from before the crash run.
CREATE UNLOGGED TABLE api_slots (
    id uuid PRIMARY KEY,
    token_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('upload', 'stream')),
    expires_at timestamptz NOT NULL
);
CREATE INDEX api_slots_token_idx ON api_slots (token_id, kind);
