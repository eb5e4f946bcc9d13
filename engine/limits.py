"""Per-token concurrency limits, kept in PostgreSQL so that they hold across API processes.

A *slot* is a row of ``api_slots`` held by one API request while it runs: ``upload`` while an
upload is received, ``stream`` while a streaming export or error report is sent. The process that
holds a slot renews it (:func:`renew`); the slot of a process that died stops counting once its
``expires_at`` passes, so a crash cannot leak a token's capacity for good.

Taking a slot and creating a job each run in one transaction under a per-token advisory lock, so
no two requests of one token can both pass a check before either inserts: a token's queued and
running jobs plus its uploads in progress never exceed its job limit, however many requests race.
An upload's slot turns into its job in the transaction that creates the job.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from engine import jobs

#: Slot kinds (the ``api_slots.kind`` check constraint).
UPLOAD = "upload"
STREAM = "stream"
KINDS = (UPLOAD, STREAM)
#: First key of the per-token advisory lock (two-key form; the second key hashes the token id).
_LOCK_CLASS = 0x626C6B73

#: Stable names of the limits, sent as the ``limit`` member of a 429 problem.
RUNNING_JOBS = "running_jobs"
CONCURRENT = {UPLOAD: "concurrent_uploads", STREAM: "concurrent_streams"}
_WHAT = {UPLOAD: "uploads in progress", STREAM: "streaming exports or error reports open"}
_SETTING = {UPLOAD: "BULKIO_MAX_CONCURRENT_UPLOADS", STREAM: "BULKIO_MAX_CONCURRENT_STREAMS"}


class LimitReached(Exception):
    """Raised when a token is at one of its limits; ``limit`` is the limit's stable name."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


def _lock(conn: psycopg.Connection[Any], token_id: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, token_id))


def _live(conn: psycopg.Connection[Any], token_id: str, kind: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM api_slots WHERE token_id = %s AND kind = %s AND expires_at > now()",
        (token_id, kind),
    ).fetchone()
    return int(row[0]) if row else 0


def _check_jobs(conn: psycopg.Connection[Any], token_id: str, job_limit: int) -> None:
    """Raise unless the token has room for one more job (its uploads in progress count)."""
    unfinished = jobs.unfinished_for_token(conn, token_id)
    uploads = _live(conn, token_id, UPLOAD)
    if unfinished + uploads >= job_limit:
        raise LimitReached(
            RUNNING_JOBS,
            f"this token already has {job_limit} queued or running jobs (uploads in progress "
            f"count too: {unfinished} jobs, {uploads} uploads); retry when one has finished",
        )


def take(
    conn: psycopg.Connection[Any],
    token_id: str,
    kind: str,
    *,
    cap: int,
    ttl_seconds: float,
    job_limit: int | None = None,
) -> str:
    """Take a slot of ``kind`` for ``token_id`` and return its id.

    ``cap`` bounds the token's live slots of this kind (0: no bound); ``job_limit``, for uploads,
    bounds its queued + running jobs plus uploads in progress. Raises :class:`LimitReached`."""
    if kind not in KINDS:
        raise ValueError(f"slot kind must be one of {', '.join(KINDS)}, got {kind!r}")
    with conn.transaction():
        _lock(conn, token_id)
        if cap > 0 and _live(conn, token_id, kind) >= cap:
            raise LimitReached(
                CONCURRENT[kind],
                f"this token already has {cap} {_WHAT[kind]} ({_SETTING[kind]}); "
                "retry when one has ended",
            )
        if job_limit is not None:
            _check_jobs(conn, token_id, job_limit)
        slot = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO api_slots (id, token_id, kind, expires_at) "
            "VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
            (slot, token_id, kind, ttl_seconds),
        )
    return slot


def create_job(
    conn: psycopg.Connection[Any],
    *,
    token_id: str,
    job_limit: int,
    slot: str | None = None,
    **fields: Any,
) -> jobs.Job:
    """:func:`engine.jobs.create` within the token's job limit, atomically: the check and the
    insert run under the token's lock, and the upload's own ``slot`` (if any) becomes the job.
    Raises :class:`LimitReached` (the slot is then kept; its holder releases it)."""
    with conn.transaction():
        _lock(conn, token_id)
        if slot is not None:
            conn.execute("DELETE FROM api_slots WHERE id = %s", (slot,))
        _check_jobs(conn, token_id, job_limit)
        return jobs.create(conn, token_id=token_id, **fields)


def release(conn: psycopg.Connection[Any], slot: str) -> None:
    conn.execute("DELETE FROM api_slots WHERE id = %s", (slot,))


def renew(conn: psycopg.Connection[Any], slots: list[str], ttl_seconds: float) -> None:
    """Extend the held ``slots`` and delete every expired one (of any process)."""
    with conn.transaction():
        if slots:
            conn.execute(
                "UPDATE api_slots SET expires_at = now() + make_interval(secs => %s) "
                "WHERE id = ANY(%s::uuid[])",
                (ttl_seconds, slots),
            )
        conn.execute("DELETE FROM api_slots WHERE expires_at <= now()")


def held(conn: psycopg.Connection[Any], token_id: str) -> dict[str, int]:
    """The token's live slots by kind (for tests and operators)."""
    return {kind: _live(conn, token_id, kind) for kind in KINDS}
