"""Run one import job: stored file → Arrow batches → validate → load, from its checkpoint on.

The reading thread (``engine.prefetch``) calls :class:`_Watch` while it reads, also while no
batch comes out (a long run of empty gzip members or of whitespace, skipping to a checkpoint):
it extends the lease, and stops the attempt on a cancel or a shutdown, instead of waiting for a
batch boundary that may be minutes away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any

import polars as pl

from engine import jobs, metrics
from engine.context import JobContext, RunResult
from engine.db import connect, connect_bulk, idle_in_transaction_ms
from engine.error_rows import ERROR_SCHEMA
from engine.errors import FileError, LeaseLost
from engine.formats.mapping import FieldMap, MappingError
from engine.formats.reader import Batch, Header, Position, read_batches
from engine.imports.fetch import ensure_source
from engine.imports.load import BatchInput, BatchLoader, Prepared
from engine.imports.validate import Validated, validate
from engine.prefetch import prefetch

log = logging.getLogger("bulkio.import")

#: While no batch commits, the reading thread extends the lease (and looks for a cancel) at most
#: this often; a shutdown is noticed at once.
HEARTBEAT_SECONDS = 1.0


def run_import(ctx: JobContext, job_id: str) -> RunResult:
    """Process the job if this worker can claim it; how the attempt ended."""
    s = ctx.settings
    job = jobs.claim(ctx.conn, job_id, ctx.worker, s.lease_seconds, s.max_attempts)
    if job is None:
        return RunResult.NOT_CLAIMED
    resource = ctx.catalog[job.resource]
    tags = {"job_id": job.id, "owner": job.owner, "resource": resource.name}
    # The worker that committed the batch passing max_errors died before failing the job.
    stop = jobs.over_max_errors(int(job.failed), job.max_errors)
    if stop is not None:
        return _stop_at_max_errors(ctx, job.id, stop, tags)
    start = Position(job.next_batch, job.next_offset, job.next_row, job.next_lines)
    loader = BatchLoader(
        ctx.bulk,
        resource,
        job.id,
        job.mode or "upsert",
        ctx.worker,
        s.lease_seconds,
        reference_checks=s.reference_checks,
        connect=lambda: connect_bulk(
            s.database_url, name="bulkio-locker", idle_ms=idle_in_transaction_ms(s.lease_seconds)
        ),
        max_error_rows=s.max_error_rows,
    )
    checked_batches: Generator[tuple[Batch, Validated, Prepared], None, None] | None = None
    began = time.monotonic()
    headers: list[Header] = []
    log.info("import started", extra={**tags, "format": job.format, "resume_batch": start.batch})
    watch = _Watch(ctx, job.id)
    try:
        merge = loader.mode == "merge"
        try:  # the API checked them when the job was created
            fields = FieldMap.of(resource.column_names, job.options, presence=merge)
        except MappingError as exc:
            raise FileError(str(exc)) from exc
        fmt = job.format
        if (job.options or {}).get("source_url"):  # fetched into storage first, once
            fmt = ensure_source(ctx, job, watch)
        batches = read_batches(
            ctx.storage.read(job.source_key),
            fmt,
            resource.column_names,
            () if merge else resource.required_columns,
            batch_rows=s.batch_rows,
            batch_bytes=s.batch_bytes,
            max_record_bytes=s.max_record_bytes,
            max_decompressed_bytes=s.max_decompressed_bytes,
            start=start,
            header_out=headers,
            on_progress=watch,
            fields=None if fields.plain else fields,
            match_keys=resource.keys if merge else (),
        )
        keys = None if fields.plain else fields.json_keys()
        # The reading thread reads, validates and prepares batch N+1 (its reference locks
        # included) while this one commits batch N.
        checked_batches = prefetch(
            ((b, checked, loader.prepare(checked.valid)) for b in batches
             for checked in (validate(b.frame, resource, keys=keys),)),
            depth=1,
        )  # fmt: skip
        for batch, checked, prepared in checked_batches:
            if headers and start.batch == 0 and batch.index == 0 and headers[0].warnings:
                jobs.set_warnings(ctx.conn, job.id, headers[0].warnings)
            if headers and headers[0].shown and batch.index == start.batch:
                loader.name_fields(headers[0].shown)  # error rows name the file's columns
            t0 = time.monotonic()
            errors = pl.concat([batch.errors.cast(ERROR_SCHEMA), checked.errors])  # type: ignore[arg-type]
            outcome = loader.apply(
                BatchInput(
                    batch.index, batch.rows, checked.valid, errors, batch.after, batch.bytes_end
                ),
                prepared,
            )
            watch.extended()
            seconds = time.monotonic() - t0
            metrics.batch_committed(resource.name, outcome.successful, outcome.failed, seconds)
            log.info(
                "batch committed",
                extra={
                    **tags,
                    "batch": batch.index,
                    "rows": outcome.processed,
                    "failed": outcome.failed,
                    "inserted": outcome.inserted,
                    "updated": outcome.updated,
                    "seconds": round(seconds, 3),
                },
            )
            if outcome.cancel_requested:
                return _stop(ctx, job.id, RunResult.CANCELLED, tags)
            stop = jobs.over_max_errors(outcome.failed_total, job.max_errors)
            if stop is not None:
                return _stop_at_max_errors(ctx, job.id, stop, tags)
            if ctx.stopping.is_set():
                return _stop(ctx, job.id, RunResult.RELEASED, tags)
    except _Stopped as stopped:  # raised by the reading thread, between batches
        return _stop(ctx, job.id, stopped.result, tags)
    except FileError as exc:
        jobs.fail(ctx.conn, job.id, ctx.worker, str(exc))
        metrics.job_finished("import", "failed")
        log.warning("import failed: unreadable file", extra={**tags, "error": str(exc)})
        return RunResult.FAILED
    except LeaseLost:
        log.warning("lease lost; another worker owns the job", extra=tags)
        return RunResult.LEASE_LOST
    finally:
        # First the locker (wakes a reading thread waiting for a lock connection), then the
        # reading thread itself (its next progress call stops it), so neither waits on the other.
        loader.close()
        watch.done()
        if checked_batches is not None:
            checked_batches.close()
        watch.close()
    jobs.finish(ctx.conn, job.id, ctx.worker, "completed")
    metrics.job_finished("import", "completed")
    final = jobs.get(ctx.conn, job.id)
    elapsed = time.monotonic() - began
    if final is not None:
        log.info(
            "import completed",
            extra={
                **tags,
                "rows": final.processed,
                "failed": final.failed,
                "error_rate": round(final.failed / final.processed, 6) if final.processed else 0.0,
                "seconds": round(elapsed, 3),
                "rows_per_sec": round(final.processed / elapsed, 1) if elapsed else None,
            },
        )
    return RunResult.COMPLETED


def _stop_at_max_errors(ctx: JobContext, job_id: str, why: str, tags: dict[str, str]) -> RunResult:
    """Fail the job: more records failed than its request's max_errors allows. The batches
    committed so far stay (the one that passed the limit included)."""
    jobs.finish(ctx.conn, job_id, ctx.worker, "failed", error=why)
    metrics.job_finished("import", "failed")
    log.warning("import stopped: too many failed records", extra={**tags, "error": why})
    return RunResult.FAILED


def _stop(ctx: JobContext, job_id: str, result: RunResult, tags: dict[str, str]) -> RunResult:
    """End the attempt early: cancelled (committed batches stay) or handed back at shutdown."""
    if result is RunResult.CANCELLED:
        jobs.finish(ctx.conn, job_id, ctx.worker, "cancelled")
        metrics.job_finished("import", "cancelled")
        log.info("import cancelled", extra=tags)
    else:
        jobs.release(ctx.conn, job_id, ctx.worker)
        log.info("import handed back at shutdown", extra=tags)
    return result


class _Stopped(Exception):
    """Raised in the reading thread to end the attempt (``result``) while no batch comes out."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.value)
        self.result = result


class _Watch:
    """The reader's progress hook, called in the reading thread every chunk read and every few
    decompression steps (``read_batches(on_progress=...)``).

    A shutdown, or the attempt ending in the main thread (:meth:`done`: say a batch's commit saw
    a cancel), raises :class:`_Stopped` at once. When no batch has committed (which extends the
    lease) for ``HEARTBEAT_SECONDS``, it extends the lease itself (:func:`engine.jobs.heartbeat`,
    which raises LeaseLost) and stops on a cancel. Its statements go through a connection of its
    own, opened on first use: the job-state connection belongs to the main thread."""

    def __init__(self, ctx: JobContext, job_id: str) -> None:
        self._ctx = ctx
        self._job_id = job_id
        self._conn: Any = None
        self._done = False
        self.extended()

    def extended(self) -> None:
        """The lease was extended just now (claimed, or a batch committed)."""
        self._last = time.monotonic()

    def done(self) -> None:
        """The attempt is over: stop reading at the next call."""
        self._done = True

    def __call__(self) -> None:
        if self._done or self._ctx.stopping.is_set():
            raise _Stopped(RunResult.RELEASED)
        if time.monotonic() - self._last < HEARTBEAT_SECONDS:
            return
        s = self._ctx.settings
        if self._conn is None:
            idle = idle_in_transaction_ms(s.lease_seconds)
            self._conn = connect(s.database_url, name="bulkio-worker", idle_ms=idle)
        cancel = jobs.heartbeat(self._conn, self._job_id, self._ctx.worker, s.lease_seconds)
        self.extended()
        if cancel:
            raise _Stopped(RunResult.CANCELLED)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
