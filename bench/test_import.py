"""1,000,000-row imports: ``psql \\copy`` of the valid rows as CSV (the figure PostgreSQL itself
reaches) against bulkio end to end (HTTP upload → job ``completed``, rows committed, error report
written), resource by resource in FK order. Each run starts from an empty target table whose
parents hold the same 1M rows, vacuumed, after a CHECKPOINT; bulkio runs with one fresh worker
process, whose peak RSS is recorded too.
"""

from __future__ import annotations

from typing import Any

import pytest
from database import PARENTS, BenchDatabase
from inputs import IMPORT_FORMATS, DataFile, data_file
from report import Recorder
from service import BenchService
from timing import timed

ROWS = 1_000_000
RESOURCES = ("users", "articles", "comments")
CASES = [(resource, system) for resource in RESOURCES for system in ("copy", "bulkio")]
#: The floor under comments: PostgreSQL's own COPY into the same table without its two foreign
#: keys (same indexes), i.e. with no reference checked at all.
CASES.insert(CASES.index(("comments", "bulkio")), ("comments", "copy-nofk"))


def prepare(database: BenchDatabase, resource: str) -> None:
    """Parents loaded with their 1M rows, ``resource`` (and what references it) empty."""
    for parent in PARENTS[resource]:
        database.ensure_loaded(data_file(parent, "csv", ROWS, plain_csv=True))
    database.empty(resource)
    database.settle(PARENTS[resource])


def measured_import(benchmark: object, database: BenchDatabase, service: BenchService,
                    resource: str, upload: DataFile) -> tuple[Any, float, Any, Any]:  # fmt: skip
    """One timed end-to-end import by a single fresh worker into an empty table, checked; returns
    (job, seconds, others' CPU, the worker's memory)."""

    def setup() -> None:
        prepare(database, resource)
        service.set_workers(1)

    job, seconds, cpu = timed(benchmark, lambda: service.import_file(upload), setup=setup)
    check_import(database, service, job, upload)
    assert database.count(resource) == upload.valid
    (memory,) = service.worker_memory()
    return job, seconds, cpu, memory


def check_import(database: BenchDatabase, service: BenchService, job: dict[str, object],
                 data: DataFile) -> None:  # fmt: skip
    job_id = str(job["job_id"])
    assert job["status"] == "completed", f"{job}\n{service.logs()}"
    assert job["processed"] == data.rows and job["successful"] == data.valid, job
    assert job["failed"] == 0 and job["error_count"] == 0, job
    report = service.error_report(job_id)
    assert report.strip() == b"", f"error report of a clean file: {report[:500]!r}"


@pytest.mark.timeout(7200)
@pytest.mark.parametrize(("resource", "system"), CASES, ids=[f"{r}-{s}" for r, s in CASES])
def test_import(benchmark: object, recorder: Recorder, database: BenchDatabase,
                service: BenchService, resource: str, system: str) -> None:  # fmt: skip
    if system == "copy-nofk":
        plain = data_file(resource, "csv", ROWS, plain_csv=True)

        def setup() -> None:
            prepare(database, resource)
            database.execute(f"DROP TABLE IF EXISTS {resource}_nofk")
            database.execute(f"CREATE TABLE {resource}_nofk (LIKE {resource} INCLUDING ALL)")
            database.settle()

        try:
            _, seconds, cpu = timed(benchmark, lambda: database.copy_in(plain, f"{resource}_nofk"),
                                    setup=setup)  # fmt: skip
            assert database.count(f"{resource}_nofk") == plain.valid
        finally:
            database.execute(f"DROP TABLE IF EXISTS {resource}_nofk")
        recorder.record(f"import.{resource}.copy_nofk", seconds, rows=plain.valid, **cpu.extra())
        return
    if system == "copy":
        plain = data_file(resource, "csv", ROWS, plain_csv=True)
        _, seconds, cpu = timed(benchmark, lambda: database.copy_in(plain),
                           setup=lambda: prepare(database, resource))  # fmt: skip
        assert database.count(resource) == plain.valid
        recorder.record(f"import.{resource}.copy", seconds, rows=plain.valid, **cpu.extra())
        return

    upload = data_file(resource, IMPORT_FORMATS[resource], ROWS)
    job, seconds, cpu, memory = measured_import(benchmark, database, service, resource, upload)
    recorder.record(f"import.{resource}.bulkio", seconds, rows=upload.valid,
                    job_duration_ms=job["duration_ms"], job_rows_per_sec=job["rows_per_sec"],
                    upload_s=round(service.last_upload_seconds, 3),
                    file_bytes=upload.path.stat().st_size, **cpu.extra())  # fmt: skip
    recorder.record(f"rss.{resource}.1m", memory.peak_mib, **memory.extra())
