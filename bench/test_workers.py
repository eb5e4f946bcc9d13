"""One worker process against one per core, importing two files at once: the two halves of the
1M users file (500,000 users each; disjoint ids and e-mails), uploaded concurrently into an empty
table. Each worker process runs one job at a time, so one worker imports them one after the
other and two import them side by side. The ratio is the speedup of one worker per core."""

from __future__ import annotations

import os

import pytest
from database import BenchDatabase
from inputs import data_file, split_csv
from report import Recorder
from service import BenchService
from test_import import check_import
from timing import timed

ROWS = 1_000_000


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("workers", [1, os.cpu_count() or 1], ids=["one", "per-core"])
def test_two_files_at_once(benchmark: object, recorder: Recorder, database: BenchDatabase,
                           service: BenchService, workers: int) -> None:  # fmt: skip
    halves = split_csv(data_file("users", "csv", ROWS), 2)

    def setup() -> None:
        database.empty("users")
        database.settle()
        service.set_workers(workers)

    done, seconds, cpu = timed(benchmark, lambda: service.import_files(halves), setup=setup)
    for job, half in zip(done, halves, strict=True):
        check_import(database, service, job, half)
    assert database.count("users") == sum(h.valid for h in halves)
    memory = service.worker_memory()
    recorder.record(f"workers.{'1' if workers == 1 else '2'}", seconds,
                    rows=sum(h.valid for h in halves), worker_processes=workers,
                    job_duration_ms=[job["duration_ms"] for job in done],
                    peak_rss_mib=[round(m.peak_mib, 1) for m in memory],
                    imports_per_worker=service.imports_started(),
                    **cpu.extra())  # fmt: skip
