"""Worker peak RSS (``VmHWM`` of the one fresh worker process that ran the import) for 100,000
records of each resource; the 1,000,000-record figures come from the imports of
``test_import.py``, and the table reports RSS(1M) / RSS(100K).

The 100K files are prefixes of the 1M ones (same seed: the same first records, the same
references), so with the 1M parents in place only the target table needs emptying. Comments
run first and users last: each run empties only its table and those referencing it.
"""

from __future__ import annotations

import pytest
from database import BenchDatabase
from inputs import IMPORT_FORMATS, data_file
from report import Recorder
from service import BenchService
from test_import import measured_import

ROWS = 100_000


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("resource", ["comments", "articles", "users"])
def test_worker_rss_100k(benchmark: object, recorder: Recorder, database: BenchDatabase,
                         service: BenchService, resource: str) -> None:  # fmt: skip
    upload = data_file(resource, IMPORT_FORMATS[resource], ROWS)
    job, seconds, cpu, memory = measured_import(benchmark, database, service, resource, upload)
    recorder.record(f"import.{resource}.100k.bulkio", seconds, rows=upload.valid,
                    job_duration_ms=job["duration_ms"], **cpu.extra())  # fmt: skip
    recorder.record(f"rss.{resource}.100k", memory.peak_mib, **memory.extra())
