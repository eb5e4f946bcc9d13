-- API tokens (bearer), stored as SHA-256 digests; created and revoked with `bulkio token`.
CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    owner text NOT NULL,
    name text NOT NULL DEFAULT '',
    token_sha256 text NOT NULL UNIQUE,
    scopes text[] NOT NULL,
    -- per-token limits; NULL means the server default (BULKIO_RATE_LIMIT_PER_MINUTE, ...)
    requests_per_minute integer,
    max_running_jobs integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_tokens_owner_idx ON api_tokens (owner);

-- the token a job was created with: running-job limits are per token
ALTER TABLE jobs ADD COLUMN token_id uuid;
CREATE INDEX jobs_token_unfinished_idx ON jobs (token_id) WHERE status IN ('queued', 'running');
