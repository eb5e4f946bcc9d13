-- Upload sessions (issue #12, engine/uploads.py): a file sent straight to storage (S3: a
-- multipart upload with presigned part URLs; local store: signed appends at an offset through
-- the API), resumable, completed with a size and SHA-256 check, then imported once.
--
-- status: open (bytes may arrive) -> completing (one request checks size and checksum; its
-- lease ends at lease_expires, after which another request may try again) -> completed
-- (size and sha256 checked; may be imported) -> imported (job_id names the job, which then owns
-- the object: the job's object_key is this upload's). completing -> rejected (checksum or size
-- mismatch: the object is deleted, `error` says why). Rows not imported by expires_at are
-- removed, with their bytes, by the retention run (engine/retention.py).
CREATE TABLE uploads (
    id uuid PRIMARY KEY,
    owner text NOT NULL,
    token_id uuid,
    file_name text,
    content_type text,
    size bigint NOT NULL CHECK (size > 0),
    -- the SHA-256 the client declared (lowercase hex), and the one computed from the bytes
    sha256 text,
    received_sha256 text,
    storage text NOT NULL CHECK (storage IN ('local', 's3')),
    object_key text NOT NULL,
    -- S3: the multipart upload's id (NULL until created) and its part size
    s3_upload_id text,
    part_size bigint NOT NULL,
    status text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'completing', 'completed', 'rejected', 'imported')),
    lease_expires timestamptz,
    error text,
    job_id uuid REFERENCES jobs (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    expires_at timestamptz NOT NULL
);
-- An owner's uploads not yet imported (BULKIO_MAX_OPEN_UPLOADS counts them).
CREATE INDEX uploads_owner_pending_idx ON uploads (owner) WHERE job_id IS NULL;
-- The retention run's expiry sweep.
CREATE INDEX uploads_expiry_idx ON uploads (expires_at) WHERE job_id IS NULL;
-- ON DELETE CASCADE from jobs (retention) finds a job's upload by this index.
CREATE INDEX uploads_job_idx ON uploads (job_id) WHERE job_id IS NOT NULL;
