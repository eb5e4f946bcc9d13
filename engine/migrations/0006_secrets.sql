-- Secrets the processes of one installation share, generated once by whichever process needs one
-- first (INSERT … ON CONFLICT DO NOTHING, then read back): e.g. 'download_signing', the HMAC key of
-- local-store download URLs (engine/storage.py), so that a URL signed by one API process verifies
-- in every other one and after restarts. BULKIO_SIGNING_SECRET, when set, is used instead.
-- Rotate by deleting the row and restarting the API processes (outstanding URLs stop working).
CREATE TABLE secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL CHECK (octet_length(value) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
