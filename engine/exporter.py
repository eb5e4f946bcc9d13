"""Run one export job: query snapshot → encoder → object storage (multipart upload on S3).

An export has no checkpoint: a job that is retried, handed back at shutdown or taken over after
a lost lease writes its file again from the start (the same key is simply overwritten). An
upload that does not finish is aborted, so no partial object is left under the result key.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from engine import db, jobs, metrics
from engine.errors import LeaseLost
from engine.export import Encoded, ExportRequestError, export_batches, from_options
from engine.importer import ImportContext
from engine.prefetch import prefetch

log = logging.getLogger("bulkio.export")

#: Progress (rows, bytes) is saved, and the lease extended, at most this often.
PROGRESS_SECONDS = 1.0


class _Stop(Exception):
    """Raised inside the upload loop to abort the upload: cancelled or shutting down."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def save_progress(
    conn: Any, job_id: str, worker: str, rows: int, size: int, lease_seconds: int
) -> bool:
    """Store rows/bytes so far and extend the lease. Returns cancel_requested; raises LeaseLost."""
    row = conn.execute(
        """UPDATE jobs SET processed = %s, bytes_read = %s, updated_at = now(),
               lease_expires = now() + make_interval(secs => %s)
           WHERE id = %s AND lease_owner = %s AND status = 'running'
           RETURNING cancel_requested""",
        (rows, size, lease_seconds, job_id, worker),
    ).fetchone()
    if row is None:
        raise LeaseLost(f"export job {job_id} is no longer leased by {worker}")
    return bool(row[0])


def run_export(ctx: ImportContext, job_id: str) -> str:
    """Write the job's export if this worker can claim it. Returns the job's status afterwards."""
    s = ctx.settings
    job = jobs.claim(ctx.conn, job_id, ctx.worker, s.lease_seconds, s.max_attempts)
    if job is None:
        return "not-claimed"
    try:
        spec, query = from_options(ctx.catalog, job.options)
    except ExportRequestError as exc:
        jobs.fail(ctx.conn, job.id, ctx.worker, str(exc))
        metrics.job_finished("export", "failed")
        return "failed"
    key = f"exports/{job.id}/{spec.file_name}"
    began = last = time.monotonic()
    log.info(
        "export started", extra={"job_id": job.id, "resource": spec.resource, "format": spec.format}
    )
    save_progress(ctx.conn, job.id, ctx.worker, 0, 0, s.lease_seconds)
    # A connection of its own: an export left mid-COPY cannot be reused (see export_batches).
    bulk = db.connect_bulk(s.database_url, name="bulkio-exporter")
    encoded = Encoded(
        prefetch(export_batches(bulk, query)), spec.writer(), gzip=spec.compression == "gzip"
    )
    try:
        with ctx.storage.writer(key) as out:
            for chunk in encoded:
                out.write(chunk)
                if time.monotonic() - last >= PROGRESS_SECONDS:
                    last = time.monotonic()
                    if save_progress(
                        ctx.conn, job.id, ctx.worker, encoded.rows, encoded.bytes, s.lease_seconds
                    ):
                        raise _Stop("cancelled")
                    if ctx.stopping.is_set():
                        raise _Stop("released")
    except _Stop as stop:
        if stop.outcome == "cancelled":
            jobs.finish(ctx.conn, job.id, ctx.worker, "cancelled")
            metrics.job_finished("export", "cancelled")
        else:
            jobs.release(ctx.conn, job.id, ctx.worker)
        log.info("export stopped", extra={"job_id": job.id, "outcome": stop.outcome})
        return stop.outcome
    except LeaseLost:
        log.warning("lease lost; another worker owns the job", extra={"job_id": job.id})
        return "lease-lost"
    finally:
        encoded.close()
        bulk.close()
    save_progress(ctx.conn, job.id, ctx.worker, encoded.rows, encoded.bytes, s.lease_seconds)
    jobs.finish(
        ctx.conn, job.id, ctx.worker, "completed", result_key=key, result_bytes=encoded.bytes
    )
    metrics.rows_exported(spec.resource, spec.format, encoded.rows)
    metrics.job_finished("export", "completed")
    elapsed = time.monotonic() - began
    log.info(
        "export completed",
        extra={
            "job_id": job.id,
            "rows": encoded.rows,
            "bytes": encoded.bytes,
            "seconds": round(elapsed, 3),
            "rows_per_sec": round(encoded.rows / elapsed, 1) if elapsed else None,
        },
    )
    return "completed"
