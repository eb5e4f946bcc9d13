"""Run one export job: query snapshot → encoder → object storage (multipart upload on S3).

An export has no checkpoint: a job that is retried, handed back at shutdown or taken over after
a lost lease writes its file again from the start (the same key is simply overwritten). An
upload that does not finish is aborted, so no partial object is left under the result key.
"""

from __future__ import annotations

import logging
import time

from engine import db, jobs, metrics
from engine.context import JobContext, RunResult
from engine.errors import LeaseLost
from engine.exports.query import Encoded, ExportRequestError, export_batches, from_options
from engine.prefetch import prefetch

log = logging.getLogger("bulkio.export")

#: Progress (rows, bytes) is saved, and the lease extended, at most this often.
PROGRESS_SECONDS = 1.0


class _Stop(Exception):
    """Raised inside the upload loop to abort the upload: cancelled or shutting down."""

    def __init__(self, outcome: RunResult) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


def run_export(ctx: JobContext, job_id: str) -> RunResult:
    """Write the job's export if this worker can claim it; how the attempt ended."""
    s = ctx.settings
    job = jobs.claim(ctx.conn, job_id, ctx.worker, s.lease_seconds, s.max_attempts)
    if job is None:
        return RunResult.NOT_CLAIMED
    try:
        spec, query = from_options(ctx.catalog, job.options)
    except ExportRequestError as exc:
        jobs.fail(ctx.conn, job.id, ctx.worker, str(exc))
        metrics.job_finished("export", "failed")
        return RunResult.FAILED
    key = f"exports/{job.id}/{spec.file_name}"
    began = last = time.monotonic()
    log.info(
        "export started", extra={"job_id": job.id, "resource": spec.resource, "format": spec.format}
    )
    jobs.save_progress(ctx.conn, job.id, ctx.worker, 0, 0, s.lease_seconds)
    # A connection of its own: an export left mid-COPY cannot be reused (see export_batches).
    bulk = db.connect_bulk(s.database_url, name="bulkio-exporter")
    encoded = Encoded(
        prefetch(export_batches(bulk, query)), spec.writer(), compression=spec.compression
    )
    try:
        with ctx.storage.writer(key) as out:
            for chunk in encoded:
                out.write(chunk)
                if time.monotonic() - last >= PROGRESS_SECONDS:
                    last = time.monotonic()
                    if jobs.save_progress(
                        ctx.conn, job.id, ctx.worker, encoded.rows, encoded.bytes, s.lease_seconds
                    ):
                        raise _Stop(RunResult.CANCELLED)
                    if ctx.stopping.is_set():
                        raise _Stop(RunResult.RELEASED)
    except _Stop as stop:
        if stop.outcome is RunResult.CANCELLED:
            jobs.finish(ctx.conn, job.id, ctx.worker, "cancelled")
            metrics.job_finished("export", "cancelled")
        else:
            jobs.release(ctx.conn, job.id, ctx.worker)
        log.info("export stopped", extra={"job_id": job.id, "outcome": stop.outcome.value})
        return stop.outcome
    except LeaseLost:
        log.warning("lease lost; another worker owns the job", extra={"job_id": job.id})
        return RunResult.LEASE_LOST
    finally:
        encoded.close()
        bulk.close()
    jobs.save_progress(ctx.conn, job.id, ctx.worker, encoded.rows, encoded.bytes, s.lease_seconds)
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
    return RunResult.COMPLETED
