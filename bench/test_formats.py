"""1,000,000 users imported as Parquet (one row group of typed columns) and as zstd-compressed
CSV (issue #12), end to end like the CSV import of ``test_import.py``, against ``psql \\copy`` of
the same rows as CSV measured in the same run (taken from ``test_import.py`` when it ran first).
Each import runs with one fresh worker, whose peak RSS is the figure the issue bounds
(<= 512 MiB at 1M rows)."""

from __future__ import annotations

import pytest
from database import BenchDatabase
from inputs import data_file, parquet_file, zstd_file
from report import Recorder
from service import BenchService
from test_import import measured_import, prepare
from timing import timed

ROWS = 1_000_000
CASES = ("copy", "parquet", "zstd")


@pytest.mark.timeout(7200)
@pytest.mark.parametrize("case", CASES)
def test_users_import_formats(benchmark: object, recorder: Recorder, database: BenchDatabase,
                              service: BenchService, case: str) -> None:  # fmt: skip
    source = data_file("users", "csv", ROWS)
    if case == "copy":
        if "import.users.copy" in recorder.measurements:
            pytest.skip("the \\copy baseline was measured by test_import.py in this run")
        plain = data_file("users", "csv", ROWS, plain_csv=True)
        _, seconds, cpu = timed(benchmark, lambda: database.copy_in(plain),
                                setup=lambda: prepare(database, "users"))  # fmt: skip
        assert database.count("users") == plain.valid
        recorder.record("import.users.copy", seconds, rows=plain.valid, **cpu.extra())
        return
    upload = parquet_file(source) if case == "parquet" else zstd_file(source)
    job, seconds, cpu, memory = measured_import(benchmark, database, service, "users", upload)
    recorder.record(f"import.users.{case}", seconds, rows=upload.valid,
                    job_duration_ms=job["duration_ms"], job_rows_per_sec=job["rows_per_sec"],
                    upload_s=round(service.last_upload_seconds, 3),
                    file_bytes=upload.path.stat().st_size, **cpu.extra())  # fmt: skip
    recorder.record(f"rss.users.{case}.1m", memory.peak_mib, **memory.extra())
