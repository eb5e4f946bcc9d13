-- bulkio schema, version 1. Applied once by `bulkio migrate` (engine/db.py).

CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL,
    updated_at timestamptz,
    -- the import job that last wrote this row: detects a key repeated later in the same file
    last_import_job uuid
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE articles (
    id uuid PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    title text NOT NULL,
    body text NOT NULL,
    author_id uuid NOT NULL REFERENCES users (id),
    tags text[] NOT NULL DEFAULT '{}',
    status text NOT NULL CHECK (status IN ('draft', 'published')),
    published_at timestamptz,
    created_at timestamptz NOT NULL,
    last_import_job uuid,
    CONSTRAINT articles_draft_unpublished CHECK (status <> 'draft' OR published_at IS NULL)
);
CREATE INDEX articles_author_id_idx ON articles (author_id);

CREATE TABLE comments (
    id text PRIMARY KEY,
    article_id uuid NOT NULL REFERENCES articles (id),
    user_id uuid NOT NULL REFERENCES users (id),
    body text NOT NULL,
    created_at timestamptz NOT NULL,
    last_import_job uuid
);
CREATE INDEX comments_article_id_idx ON comments (article_id);
CREATE INDEX comments_user_id_idx ON comments (user_id);

CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('import', 'export')),
    resource text NOT NULL,
    format text NOT NULL,
    mode text,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    owner text NOT NULL DEFAULT 'anonymous',
    options jsonb NOT NULL DEFAULT '{}',
    file_name text,
    object_key text,
    total_bytes bigint,
    bytes_read bigint NOT NULL DEFAULT 0,
    total_records bigint,
    processed bigint NOT NULL DEFAULT 0,
    successful bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    error_count bigint NOT NULL DEFAULT 0,
    inserted bigint NOT NULL DEFAULT 0,
    updated bigint NOT NULL DEFAULT 0,
    -- resume point: next batch index, decoded byte offset, next row number, newlines before
    next_batch integer NOT NULL DEFAULT 0,
    next_offset bigint NOT NULL DEFAULT 0,
    next_row bigint NOT NULL DEFAULT 1,
    next_lines bigint NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    error text,
    warnings text[] NOT NULL DEFAULT '{}',
    result_key text,
    result_bytes bigint,
    run_ms bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX jobs_unfinished_idx ON jobs (status, lease_expires) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_owner_created_idx ON jobs (owner, created_at DESC);

CREATE TABLE job_errors (
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    row_no bigint NOT NULL,
    line_no bigint,
    field text,
    code text NOT NULL,
    message text NOT NULL,
    value text
);
CREATE INDEX job_errors_job_row_idx ON job_errors (job_id, row_no);

-- keys accepted so far by a validate_only job (write modes use last_import_job instead)
CREATE UNLOGGED TABLE job_keys (
    job_id uuid NOT NULL,
    key text NOT NULL,
    PRIMARY KEY (job_id, key)
);

CREATE TABLE idempotency_keys (
    owner text NOT NULL,
    key text NOT NULL,
    request_hash text,
    job_id uuid REFERENCES jobs (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);
