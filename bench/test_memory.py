"""Worker peak RSS (``VmHWM`` of the one fresh worker process that ran the import) for 100,000
users; the 1,000,000-user figure comes from the 1M users import of ``test_import.py``, and the
table reports RSS(1M) / RSS(100K)."""

from __future__ import annotations

import pytest
from database import BenchDatabase
from inputs import data_file
from report import Recorder
from service import BenchService
from test_import import check_import
from timing import timed

ROWS = 100_000


@pytest.mark.timeout(1800)
def test_worker_rss_100k(benchmark: object, recorder: Recorder, database: BenchDatabase,
                         service: BenchService) -> None:  # fmt: skip
    upload = data_file("users", "csv", ROWS)

    def setup() -> None:
        database.empty("users")
        database.settle()
        service.set_workers(1)

    job, seconds, cpu = timed(benchmark, lambda: service.import_file(upload), setup=setup)
    check_import(database, service, job, upload)
    assert database.count("users") == upload.valid
    (memory,) = service.worker_memory()
    recorder.record("import.users.100k.bulkio", seconds, rows=upload.valid,
                    job_duration_ms=job["duration_ms"], **cpu.extra())  # fmt: skip
    recorder.record("rss.users.100k", memory.peak_mib, **memory.extra())
