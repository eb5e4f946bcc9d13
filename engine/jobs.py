"""Jobs in PostgreSQL: creation, idempotency keys, claiming with leases, progress, terminal states.

The ``jobs`` row is the source of truth. A worker *claims* a job by taking its lease
(``lease_owner``/``lease_expires``); every batch commit extends the lease and advances the
checkpoint only while the lease is still held (``engine.imports.load``). A job whose lease expired
(its worker died) or whose queue message was lost is re-enqueued by :func:`due_for_requeue`.

States: queued → running → completed | failed | cancelled; running → queued when a worker
stops gracefully or dies (the next claim resumes from the checkpoint).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row

from engine.errors import IdempotencyConflict, IdempotencyInProgress, LeaseLost

TERMINAL = ("completed", "failed", "cancelled")
#: An idempotency key whose first request never finished (the API died) is taken over after this.
STALE_KEY_SECONDS = 3600


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the ``jobs`` table (columns that later migrations add and no code reads are
    ignored by :func:`_job`)."""

    id: str
    kind: str
    resource: str
    format: str
    mode: str | None
    status: str
    owner: str
    options: dict[str, Any]
    file_name: str | None
    object_key: str | None
    total_bytes: int | None
    bytes_read: int
    total_records: int | None
    processed: int
    successful: int
    failed: int
    error_count: int
    stored_errors: int = 0
    inserted: int
    updated: int
    next_batch: int
    next_offset: int
    next_row: int
    next_lines: int
    attempts: int
    stalled_attempts: int = 0
    lease_owner: str | None
    lease_expires: datetime | None
    cancel_requested: bool
    error: str | None
    warnings: list[str]
    result_key: str | None
    result_bytes: int | None
    run_ms: int = 0
    token_id: str | None = None
    event_seq: int = 0
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def source_key(self) -> str:
        """The object key of an import's stored file (every import job has one)."""
        if self.object_key is None:
            raise ValueError(f"job {self.id} has no stored file")
        return self.object_key

    @property
    def max_errors(self) -> int | None:
        """An import request's ``max_errors`` (None: not given; stored in ``options``)."""
        value = (self.options or {}).get("max_errors")
        return None if value is None else int(value)

    @property
    def errors_truncated(self) -> bool:
        """More error rows were counted than stored (BULKIO_MAX_ERROR_ROWS)."""
        return self.stored_errors < self.error_count


_FIELDS = frozenset(Job.__struct_fields__)


def from_row(row: dict[str, Any]) -> Job:
    """A ``jobs`` row (``SELECT *`` or ``RETURNING *``) as a :class:`Job`."""
    values = {k: v for k, v in row.items() if k in _FIELDS}
    for key in ("id", "token_id"):
        if values.get(key) is not None:
            values[key] = str(values[key])
    return Job(**values)


def _one(conn: psycopg.Connection[Any], sql: str, params: Any = ()) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def new_job_id() -> str:
    return str(uuid.uuid4())


def create(
    conn: psycopg.Connection[Any],
    *,
    job_id: str,
    kind: str,
    resource: str,
    fmt: str,
    mode: str | None,
    owner: str,
    options: dict[str, Any] | None = None,
    file_name: str | None = None,
    object_key: str | None = None,
    total_bytes: int | None = None,
    token_id: str | None = None,
) -> Job:
    from psycopg.types.json import Jsonb

    row = _one(
        conn,
        """INSERT INTO jobs (id, kind, resource, format, mode, owner, options, file_name,
                             object_key, total_bytes, token_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (
            job_id,
            kind,
            resource,
            fmt,
            mode,
            owner,
            Jsonb(options or {}),
            file_name,
            object_key,
            total_bytes,
            token_id,
        ),
    )
    assert row is not None
    return from_row(row)


def unfinished_for_token(conn: psycopg.Connection[Any], token_id: str) -> int:
    """Queued + running jobs created with this token (its concurrency limit counts these)."""
    row = conn.execute(
        "SELECT count(*) FROM jobs WHERE token_id = %s AND status IN ('queued', 'running')",
        (token_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def get(
    conn: psycopg.Connection[Any], job_id: str, owner: str | None = None, kind: str | None = None
) -> Job | None:
    """The job, or None when it does not exist or belongs to someone else (owner=None: anyone)."""
    try:
        uuid.UUID(job_id)
    except ValueError:
        return None
    row = _one(
        conn,
        "SELECT * FROM jobs WHERE id = %s AND (%s::text IS NULL OR owner = %s) "
        "AND (%s::text IS NULL OR kind = %s)",
        (job_id, owner, owner, kind, kind),
    )
    return from_row(row) if row else None


#: Columns of an error row, as the reports name them.
ERROR_COLUMNS = ("row", "line", "field", "code", "message", "value")


def stream_errors(cur: Any, job_id: str, columns: Sequence[str] = ERROR_COLUMNS) -> Any:
    """The job's error rows in report order (by row, record-level errors first), as an Arrow
    record batch reader from the ADBC cursor ``cur``. The job id goes in as the literal of a
    parsed UUID, not a bind parameter: the ADBC driver returns a query with parameters as one
    single batch (measured), which would defeat streaming."""
    names = {"row": "row_no AS row", "line": "line_no AS line"}
    select = ", ".join(names.get(c, c) for c in columns)
    cur.execute(
        f"SELECT {select} FROM job_errors WHERE job_id = '{uuid.UUID(job_id)}'::uuid "
        "ORDER BY row_no, field NULLS FIRST"
    )
    return cur.fetch_record_batch()


def first_errors(conn: psycopg.Connection[Any], job_id: str, limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT row_no AS row, line_no AS line, field, code, message, value FROM job_errors "
            "WHERE job_id = %s ORDER BY row_no, field NULLS FIRST LIMIT %s",
            (job_id, limit),
        )
        return cur.fetchall()


#: A place in a job's error rows, in report order: ``(row, field, code)``, where the field of a
#: record-level error (no field) is ``""``, which sorts first.
ErrorKey = tuple[int, str, str]
#: Error rows in report order; "C" collation: the same order whatever the database's locale.
_ERROR_ORDER = 'row_no, coalesce(field, \'\') COLLATE "C", code COLLATE "C"'


def error_page(
    conn: psycopg.Connection[Any],
    job_id: str,
    *,
    limit: int,
    after: ErrorKey | None = None,
    field: str | None = None,
    code: str | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` error rows after ``after`` (keyset paging: each page reads from the
    (job_id, row_no) index where the previous one ended), only those of ``field`` and ``code``
    when given. Only the conditions in use are in the SQL text, never as a prepared statement: a
    generic plan would not know which filters are empty."""
    where = ["job_id = %(job)s"]
    params: dict[str, Any] = {"job": job_id, "limit": limit}
    if field is not None:
        where.append("field = %(field)s")
        params["field"] = field
    if code is not None:
        where.append("code = %(code)s")
        params["code"] = code
    if after is not None:
        where.append(
            "row_no >= %(row)s AND (row_no > %(row)s OR "
            """(coalesce(field, '') COLLATE "C", code COLLATE "C") > (%(f)s, %(c)s))"""
        )
        params.update(row=after[0], f=after[1], c=after[2])
    sql = (
        "SELECT row_no AS row, line_no AS line, field, code, message, value FROM job_errors "
        f"WHERE {' AND '.join(where)} ORDER BY {_ERROR_ORDER} LIMIT %(limit)s"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params, prepare=False)
        return cur.fetchall()


def error_counts(
    conn: psycopg.Connection[Any], job_id: str, limit: int
) -> list[tuple[str | None, str, int]]:
    """The job's stored error rows counted by (field, code), most frequent first; at most
    ``limit`` pairs (a resource has a handful of fields and codes)."""
    rows = conn.execute(
        "SELECT field, code, count(*) FROM job_errors WHERE job_id = %s GROUP BY field, code "
        'ORDER BY count(*) DESC, field COLLATE "C" NULLS FIRST, code COLLATE "C" LIMIT %s',
        (job_id, limit),
    ).fetchall()
    return [(r[0], str(r[1]), int(r[2])) for r in rows]


# ---------------------------------------------------------------- idempotency


def request_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def reserve_key(conn: psycopg.Connection[Any], owner: str, key: str) -> Job | str | None:
    """Reserve ``key`` for a new request. Returns None when reserved for the caller, the stored
    request hash (str) when the key already names a finished request whose job is returned by
    :func:`replay`, or raises IdempotencyInProgress."""
    row = _one(
        conn,
        "INSERT INTO idempotency_keys (owner, key) VALUES (%s, %s) ON CONFLICT DO NOTHING "
        "RETURNING created_at",
        (owner, key),
    )
    if row:
        return None
    existing = _one(
        conn,
        "SELECT request_hash, job_id, now() - created_at > make_interval(secs => %s) AS stale "
        "FROM idempotency_keys WHERE owner = %s AND key = %s",
        (STALE_KEY_SECONDS, owner, key),
    )
    if existing is None:  # deleted between the two statements: try once more
        return reserve_key(conn, owner, key)
    if existing["job_id"] is None:
        if existing["stale"]:
            conn.execute("DELETE FROM idempotency_keys WHERE owner = %s AND key = %s", (owner, key))
            return reserve_key(conn, owner, key)
        raise IdempotencyInProgress(
            "a request with this Idempotency-Key is still being accepted; retry in a moment"
        )
    return str(existing["request_hash"])


def replay(conn: psycopg.Connection[Any], owner: str, key: str, digest: str) -> Job:
    row = _one(
        conn,
        "SELECT j.* FROM idempotency_keys k JOIN jobs j ON j.id = k.job_id "
        "WHERE k.owner = %s AND k.key = %s",
        (owner, key),
    )
    stored = _one(
        conn,
        "SELECT request_hash FROM idempotency_keys WHERE owner = %s AND key = %s",
        (owner, key),
    )
    if row is None or stored is None:
        raise IdempotencyInProgress("the job of this Idempotency-Key is gone; use a new key")
    if stored["request_hash"] != digest:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used for a different request; use a new key"
        )
    return from_row(row)


def complete_key(
    conn: psycopg.Connection[Any], owner: str, key: str, digest: str, job_id: str
) -> None:
    conn.execute(
        "UPDATE idempotency_keys SET request_hash = %s, job_id = %s WHERE owner = %s AND key = %s",
        (digest, job_id, owner, key),
    )


def release_key(conn: psycopg.Connection[Any], owner: str, key: str) -> None:
    conn.execute(
        "DELETE FROM idempotency_keys WHERE owner = %s AND key = %s AND job_id IS NULL",
        (owner, key),
    )


# ---------------------------------------------------------------- claiming and leases


def claim(
    conn: psycopg.Connection[Any], job_id: str, worker: str, lease_seconds: int, max_attempts: int
) -> Job | None:
    """Take the job's lease if it is free and it has attempts left; a job whose lease is free but
    whose attempts are used up is failed instead. ``attempts`` counts every claim;
    ``stalled_attempts`` the claims since the last committed batch, and is what the limit bounds."""
    free = "(lease_expires IS NULL OR lease_expires < now() OR lease_owner = %s)"
    row = _one(
        conn,
        f"""UPDATE jobs SET status = 'running', lease_owner = %s, attempts = attempts + 1,
               stalled_attempts = stalled_attempts + 1,
               lease_expires = now() + make_interval(secs => %s),
               started_at = coalesce(started_at, now()), updated_at = now()
           WHERE id = %s AND status IN ('queued', 'running') AND {free}
             AND stalled_attempts < %s
           RETURNING *""",
        (worker, lease_seconds, job_id, worker, max_attempts),
    )
    if row is not None:
        return from_row(row)
    conn.execute(
        f"""UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_expires = NULL,
               finished_at = now(), updated_at = now(), total_records = processed,
               error = 'gave up after ' || stalled_attempts || ' attempts; last error: '
                       || coalesce(error, 'worker lost')
           WHERE id = %s AND status IN ('queued', 'running') AND {free}
             AND stalled_attempts >= %s""",
        (job_id, worker, max_attempts),
    )
    return None


def note_error(conn: psycopg.Connection[Any], job_id: str, worker: str, message: str) -> None:
    """Record a retryable failure and free the lease so a retry can claim the job at once."""
    conn.execute(
        "UPDATE jobs SET error = %s, lease_owner = NULL, lease_expires = NULL, status = 'queued', "
        "updated_at = now() WHERE id = %s AND lease_owner = %s AND status = 'running'",
        (message[:2000], job_id, worker),
    )


def release(conn: psycopg.Connection[Any], job_id: str, worker: str) -> None:
    """Give the job back (graceful shutdown); the checkpoint stays, another worker resumes."""
    conn.execute(
        "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires = NULL, "
        "attempts = greatest(attempts - 1, 0), "
        "stalled_attempts = greatest(stalled_attempts - 1, 0), updated_at = now() "
        "WHERE id = %s AND lease_owner = %s AND status = 'running'",
        (job_id, worker),
    )


def save_progress(
    conn: psycopg.Connection[Any],
    job_id: str,
    worker: str,
    rows: int,
    size: int,
    lease_seconds: int,
) -> bool:
    """Exports: store rows/bytes so far and extend the lease. Returns cancel_requested; raises
    LeaseLost. (Imports advance theirs with :data:`CHECKPOINT` inside each batch's transaction.)"""
    row = conn.execute(
        """UPDATE jobs SET processed = %s, bytes_read = %s, updated_at = now(),
               lease_expires = now() + make_interval(secs => %s)
           WHERE id = %s AND lease_owner = %s AND status = 'running'
           RETURNING cancel_requested""",
        (rows, size, lease_seconds, job_id, worker),
    ).fetchone()
    if row is None:
        raise LeaseLost(f"job {job_id} is no longer leased by {worker}")
    return bool(row[0])


def heartbeat(conn: psycopg.Connection[Any], job_id: str, worker: str, lease_seconds: int) -> bool:
    """Imports: extend the lease while the reader works without committing a batch (a long run
    of input without records). Returns cancel_requested; raises LeaseLost. Never waits on the
    job's row: while a batch transaction holds it, that batch extends the lease itself."""
    row = conn.execute(
        """WITH mine AS (SELECT id FROM jobs WHERE id = %s AND lease_owner = %s
                           AND status = 'running' FOR NO KEY UPDATE SKIP LOCKED)
           UPDATE jobs SET lease_expires = now() + make_interval(secs => %s)
           FROM mine WHERE jobs.id = mine.id RETURNING jobs.cancel_requested""",
        (job_id, worker, lease_seconds),
    ).fetchone()
    if row is None:  # locked by a committing batch, or no longer ours
        row = conn.execute(
            "SELECT cancel_requested FROM jobs "
            "WHERE id = %s AND lease_owner = %s AND status = 'running'",
            (job_id, worker),
        ).fetchone()
    if row is None:
        raise LeaseLost(f"job {job_id} is no longer leased by {worker}")
    return bool(row[0])


#: Imports: one batch's checkpoint, counters and lease extension, executed (ADBC, ``$n``
#: parameters) in the batch's own transaction, only while this worker holds the lease and the
#: job expects this batch. Parameters: next batch, next offset, next row, lines before, processed,
#: successful, failed, error rows, inserted, updated, bytes read, lease seconds, job id, worker,
#: this batch's index, error rows stored (of the error rows: the rest passed
#: BULKIO_MAX_ERROR_ROWS). Returns (cancel_requested, the job's failed records, its stored error
#: rows), all after this batch (no row: the lease was lost).
CHECKPOINT = """
UPDATE jobs SET next_batch = $1, next_offset = $2, next_row = $3, next_lines = $4,
    processed = processed + $5, successful = successful + $6, failed = failed + $7,
    error_count = error_count + $8, inserted = inserted + $9, updated = updated + $10,
    bytes_read = $11, lease_expires = now() + make_interval(secs => $12), updated_at = now(),
    stalled_attempts = 0, stored_errors = stored_errors + $16
WHERE id = $13::uuid AND lease_owner = $14 AND next_batch = $15 AND status = 'running'
RETURNING cancel_requested, failed, stored_errors
"""


def over_max_errors(failed: int, max_errors: int | None) -> str | None:
    """Why an import with ``failed`` failed records stops, given its request's ``max_errors``
    (None: it goes on)."""
    if max_errors is None or failed <= max_errors:
        return None
    return f"stopped after {failed} failed records: more than max_errors={max_errors}"


def set_warnings(conn: psycopg.Connection[Any], job_id: str, warnings: list[str]) -> None:
    conn.execute("UPDATE jobs SET warnings = %s WHERE id = %s", (warnings, job_id))


def set_source(
    conn: psycopg.Connection[Any], job_id: str, worker: str, fmt: str, total_bytes: int | None
) -> None:
    """Imports from a URL: the format and size the fetch learnt (engine/imports/fetch.py), while
    ``worker`` holds the lease; raises LeaseLost."""
    cur = conn.execute(
        "UPDATE jobs SET format = %s, total_bytes = %s, updated_at = now() "
        "WHERE id = %s AND lease_owner = %s AND status = 'running'",
        (fmt, total_bytes, job_id, worker),
    )
    if cur.rowcount != 1:
        raise LeaseLost(f"job {job_id} is no longer leased by {worker}")


def finish(
    conn: psycopg.Connection[Any],
    job_id: str,
    worker: str,
    status: str = "completed",
    **fields: Any,
) -> bool:
    sets = "".join(f", {name} = %({name})s" for name in fields)
    cur = conn.execute(
        f"""UPDATE jobs SET status = %(status)s, lease_owner = NULL, lease_expires = NULL,
               finished_at = now(), updated_at = now(), total_records = processed{sets}
           WHERE id = %(id)s AND lease_owner = %(worker)s AND status = 'running'""",
        {"status": status, "id": job_id, "worker": worker, **fields},
    )
    return cur.rowcount == 1


def fail(conn: psycopg.Connection[Any], job_id: str, worker: str | None, message: str) -> None:
    conn.execute(
        """UPDATE jobs SET status = 'failed', error = %s, lease_owner = NULL, lease_expires = NULL,
               finished_at = now(), updated_at = now(), total_records = processed
           WHERE id = %s AND status NOT IN ('completed', 'failed', 'cancelled')
             AND (%s::text IS NULL OR lease_owner = %s OR lease_owner IS NULL)""",
        (message[:2000], job_id, worker, worker),
    )


def request_cancel(conn: psycopg.Connection[Any], job_id: str) -> Job | None:
    """Queued jobs are cancelled at once; running ones stop at their next batch boundary."""
    row = _one(
        conn,
        """UPDATE jobs SET cancel_requested = true, updated_at = now(),
               status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
               finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END
           WHERE id = %s RETURNING *""",
        (job_id,),
    )
    return from_row(row) if row else None


def due_for_requeue(
    conn: psycopg.Connection[Any], requeue_after: int, max_attempts: int
) -> list[tuple[str, str]]:
    """Jobs whose worker died (lease expired) or whose message was lost (queued too long).

    Marks them touched so the next pass does not enqueue them again at once; fails running jobs
    that have used up their attempts. Returns (job id, kind) pairs to enqueue.
    """
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (0x72656373,)).fetchone()
        if not got or not got[0]:
            return []
        conn.execute(
            """UPDATE jobs SET status = 'failed', finished_at = now(), updated_at = now(),
                   lease_owner = NULL, lease_expires = NULL, total_records = processed,
                   error = 'gave up after ' || stalled_attempts || ' attempts; last error: '
                           || coalesce(error, 'worker lost')
               WHERE status = 'running' AND lease_expires < now() AND stalled_attempts >= %s""",
            (max_attempts,),
        )
        # FOR NO KEY UPDATE, not FOR UPDATE: a batch transaction holds FOR KEY SHARE on its job
        # row (the job_errors foreign key) until it commits, and FOR UPDATE would skip the job
        # of a frozen owner for as long as its transaction stays open, instead of taking it over.
        rows = conn.execute(
            """UPDATE jobs SET updated_at = now()
               WHERE id IN (
                   SELECT id FROM jobs
                   WHERE (status = 'running' AND lease_expires < now())
                      OR (status = 'queued' AND updated_at < now() - make_interval(secs => %s))
                   ORDER BY created_at LIMIT 100 FOR NO KEY UPDATE SKIP LOCKED)
               RETURNING id, kind""",
            (requeue_after,),
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def duration_ms(job: Job, now: datetime) -> int | None:
    if job.started_at is None:
        return None
    end = job.finished_at or now
    return max(int((end - job.started_at).total_seconds() * 1000), 0)
