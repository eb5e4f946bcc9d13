"""Retention: finished jobs older than the retention period are deleted with all they own.

A job owns its uploaded file (``imports/<id>/…``), its export result (``exports/<id>/…``, named by
``result_key``), its error rows (``job_errors``), its events (``job_events``), its webhook
deliveries with their attempts (``webhook_deliveries``, ``webhook_attempts``: ON DELETE CASCADE
from the job, a handful per job), its idempotency key and its ``job_keys``. Only finished jobs
(completed, failed, cancelled) are deleted, counted from ``finished_at``; queued and running jobs
are never touched, however old. ``job_keys`` (a validate_only job's accepted keys, keys other jobs
took over from an import) are read only while their job runs: every run deletes those of all
finished jobs, whatever their age.

Objects go first, then rows, without a transaction held open in between (deleting objects can
take long on S3): a run that dies half way leaves rows whose objects may be gone, and the next run
deletes them again (a missing object is not an error). A finished job never changes again, so
concurrent runs (a worker's hourly run, ``bulkio cleanup``) at worst delete the same thing twice.

A job's error rows and job_keys can number millions: they are deleted first, in chunks of at most
``ROWS_PER_CHUNK`` rows, each chunk its own short transaction that walks the table's
``(job_id, …)`` index from where the previous one stopped, and only then the job row itself (whose
cascade then finds nothing left). One long DELETE would hold its locks, bloat and WAL in one
transaction and hold back vacuum for as long as it runs.

Two leftovers without a job are swept too: objects under ``imports/`` or ``exports/`` whose job
row does not exist (the API died between storing an upload and creating its job), and
idempotency keys reserved by a request that never created a job. Upload sessions not imported
by their expiry (BULKIO_UPLOAD_EXPIRY_HOURS) go too, with their bytes (engine/uploads.py's
:func:`~engine.uploads.expire`), also when retention is off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import obstore
import psycopg

from engine import db, uploads
from engine.jobs import TERMINAL
from engine.settings import Settings
from engine.storage import Storage

log = logging.getLogger("bulkio.retention")

#: Jobs deleted per round (one listing per object prefix, then one DELETE statement).
CHUNK = 200
#: Error rows (or job_keys) of a job deleted per transaction.
ROWS_PER_CHUNK = 10_000
#: The tables of a job's many rows: (table, the column after job_id in its index, a value below
#: every stored one). Identifiers from here only.
_JOB_ROWS = (("job_errors", "row_no", 0), ("job_keys", "key", ""), ("job_events", "seq", 0))
#: Object prefixes whose second path segment is the owning job's id.
JOB_PREFIXES = ("imports", "exports")
#: An object without a job is swept only when older than this, whatever the retention: an upload
#: still streaming in has no job row yet.
ORPHAN_MIN_AGE = timedelta(days=1)
#: How often each worker runs the cleanup (one worker at a time does the work).
CLEANUP_EVERY_SECONDS = 3600
#: Arbitrary key of the advisory lock that lets one worker at a time run the periodic cleanup.
CLEANUP_LOCK = 0x72657465


@dataclass(frozen=True, slots=True)
class CleanupReport:
    #: finished jobs deleted (with their error rows, idempotency keys and job_keys)
    jobs: int = 0
    #: stored objects of those jobs deleted
    objects: int = 0
    #: stored objects deleted because their job no longer exists
    orphans: int = 0
    #: idempotency keys deleted whose request never created a job
    idempotency_keys: int = 0
    #: upload sessions removed, with their bytes, because they expired before an import
    uploads: int = 0


def cleanup(
    conn: psycopg.Connection[Any],
    storage: Storage,
    older_than: timedelta,
    *,
    now: datetime | None = None,
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> CleanupReport:
    """Delete finished jobs whose ``finished_at`` is more than ``older_than`` ago, with their
    objects and rows, then the leftovers described in the module docstring. ``conn`` must be in
    autocommit mode: each chunk of rows is its own transaction."""
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    if not conn.autocommit:
        raise ValueError("cleanup needs an autocommit connection (it commits chunk by chunk)")
    if rows_per_chunk < 1:
        raise ValueError("rows_per_chunk must be at least 1")
    cutoff = (now or datetime.now(UTC)) - older_than
    jobs = objects = 0
    while True:
        rows = conn.execute(
            "SELECT id::text, object_key, result_key FROM jobs "
            "WHERE status = ANY(%s) AND finished_at < %s ORDER BY finished_at LIMIT %s",
            (list(TERMINAL), cutoff, CHUNK),
        ).fetchall()
        if not rows:
            break
        ids = [r[0] for r in rows]
        keys = {k for r in rows for k in r[1:] if k}
        for job_id in ids:
            keys.update(_job_objects(storage, job_id))
        for key in sorted(keys):
            storage.delete(key)
        _remove_empty_dirs(storage, ids)
        objects += len(keys)
        for job_id in ids:
            for table, column, lowest in _JOB_ROWS:
                _delete_in_chunks(conn, table, column, lowest, job_id, rows_per_chunk)
        with conn.transaction():
            # idempotency_keys go with their job (ON DELETE CASCADE); job_errors and job_events
            # (also ON DELETE CASCADE) are gone already
            jobs += conn.execute(
                "DELETE FROM jobs WHERE id = ANY(%s::uuid[]) AND status = ANY(%s)",
                (ids, list(TERMINAL)),
            ).rowcount
    for (job_id,) in conn.execute(_FINISHED_WITH_KEYS).fetchall():
        _delete_in_chunks(conn, "job_keys", "key", "", job_id, rows_per_chunk)
    orphans = _sweep_orphans(conn, storage, min(cutoff, datetime.now(UTC) - ORPHAN_MIN_AGE))
    keys_deleted = conn.execute(
        "DELETE FROM idempotency_keys WHERE job_id IS NULL AND created_at < %s", (cutoff,)
    ).rowcount
    expired = uploads.expire(conn, storage, now)
    report = CleanupReport(jobs, objects, orphans, keys_deleted, expired)
    log.info(
        "retention cleanup done",
        extra={"older_than_days": older_than / timedelta(days=1), **_fields(report)},
    )
    return report


#: Jobs that have job_keys but will never read them again (finished, or gone): a loose index scan
#: of job_keys' primary key, one probe per distinct job.
_FINISHED_WITH_KEYS = """
WITH RECURSIVE ids AS (
    (SELECT job_id FROM job_keys ORDER BY job_id LIMIT 1)
    UNION ALL
    SELECT (SELECT k.job_id FROM job_keys k WHERE k.job_id > ids.job_id ORDER BY k.job_id LIMIT 1)
    FROM ids WHERE ids.job_id IS NOT NULL
)
SELECT ids.job_id::text FROM ids WHERE ids.job_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM jobs j WHERE j.id = ids.job_id AND j.status IN ('queued', 'running'))
"""


def _delete_in_chunks(
    conn: psycopg.Connection[Any], table: str, column: str, lowest: Any, job_id: str, chunk: int
) -> None:
    """Delete the job's rows of ``table``, ``chunk`` rows per statement (autocommit: one
    transaction each), in index order: each statement starts where the previous one stopped,
    so none walks the dead index entries the earlier ones left (vacuum removes them later)."""
    sql = f"""
        WITH gone AS (
            DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM {table} WHERE job_id = %s AND {column} >= %s
                ORDER BY {column} LIMIT %s))
            RETURNING {column}
        )
        SELECT count(*), max({column}) FROM gone"""
    start = lowest
    while True:
        row = conn.execute(sql, (job_id, start, chunk)).fetchone()
        if row is None or row[0] < chunk:
            return
        start = row[1]  # >=: rows sharing the last row_no may remain


def _fields(report: CleanupReport) -> dict[str, int]:
    return {
        "jobs": report.jobs,
        "objects": report.objects,
        "orphans": report.orphans,
        "idempotency_keys": report.idempotency_keys,
        "uploads": report.uploads,
    }


def _list(storage: Storage, prefix: str) -> Iterator[tuple[str, datetime]]:
    """(path, last modified) of every object under ``prefix``."""
    for batch in obstore.list(storage.store, prefix=prefix):
        for meta in batch:
            yield meta["path"], meta["last_modified"]


def _job_objects(storage: Storage, job_id: str) -> list[str]:
    return [path for p in JOB_PREFIXES for path, _ in _list(storage, f"{p}/{job_id}/")]


def _remove_empty_dirs(storage: Storage, ids: list[str]) -> None:
    """A local store keeps a job's emptied directories; remove them (best effort)."""
    root = getattr(storage.store, "prefix", None) if storage.kind == "local" else None
    if root is None:
        return
    for job_id in ids:
        for prefix in JOB_PREFIXES:
            with contextlib.suppress(OSError):
                os.rmdir(Path(root) / prefix / job_id)


def _sweep_orphans(conn: psycopg.Connection[Any], storage: Storage, cutoff: datetime) -> int:
    old: dict[str, list[str]] = {}
    for prefix in JOB_PREFIXES:
        for path, modified in _list(storage, f"{prefix}/"):
            parts = path.split("/")
            if len(parts) >= 3 and modified < cutoff:
                old.setdefault(parts[1], []).append(path)
    if not old:
        return 0
    candidates = list(old)
    known: set[str] = set()
    for start in range(0, len(candidates), 1000):
        chunk = candidates[start : start + 1000]
        known.update(
            r[0]
            for r in conn.execute(
                "SELECT id::text FROM jobs WHERE id::text = ANY(%s)", (chunk,)
            ).fetchall()
        )
    gone = [job_id for job_id in candidates if job_id not in known]
    for job_id in gone:
        for key in old[job_id]:
            storage.delete(key)
    _remove_empty_dirs(storage, gone)
    return sum(len(old[job_id]) for job_id in gone)


def cleanup_forever(settings: Settings, storage: Storage, stop: threading.Event) -> None:
    """A worker's periodic cleanup: every CLEANUP_EVERY_SECONDS, starting at once, in the one
    worker that gets the advisory lock. Only expired upload sessions go when ``retention_days``
    is 0."""
    while True:
        try:
            with db.connect(settings.database_url, name="bulkio-retention") as conn:
                got = conn.execute("SELECT pg_try_advisory_lock(%s)", (CLEANUP_LOCK,)).fetchone()
                if got and got[0] and settings.retention_days > 0:
                    cleanup(conn, storage, timedelta(days=settings.retention_days))
                elif got and got[0]:
                    uploads.expire(conn, storage)
        except Exception:
            log.warning("retention cleanup failed; it runs again later", exc_info=True)
        if stop.wait(CLEANUP_EVERY_SECONDS):
            return
