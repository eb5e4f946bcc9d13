"""Export of the 1,000,000 users over HTTP (``GET /v1/exports``, streamed) as NDJSON and CSV,
against ``psql \\copy (SELECT … ORDER BY id) TO STDOUT`` of the same rows and columns as the
baseline. Both write what they receive to a file in the same directory (so the row counts can be
checked afterwards); the throughput ratio is bulkio rows/s over \\copy's rows/s. The client asks
for ``Accept-Encoding: identity``: like \\copy's, the body is not compressed.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from database import BenchDatabase
from inputs import data_file
from report import Recorder
from service import BenchService
from timing import timed

ROWS = 1_000_000
#: Exports are short next to imports: the median of a few rounds is steadier than one run.
ROUNDS = 3
USER_COLUMNS = "id, email, name, role, active, created_at, updated_at"
BASELINE_QUERY = f"SELECT {USER_COLUMNS} FROM users ORDER BY id"
CASES = ("copy", "ndjson", "csv")


@pytest.fixture(scope="module")
def loaded_users(database: BenchDatabase) -> int:
    users = data_file("users", "csv", ROWS, plain_csv=True)
    database.ensure_loaded(users)
    return users.valid


def csv_records(path: Path) -> int:
    return pl.read_csv(path, infer_schema=False, columns=["id"]).height


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("system", CASES)
def test_export(benchmark: object, recorder: Recorder, database: BenchDatabase,
                service: BenchService, loaded_users: int, system: str,
                tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / f"users.{system}"

    def setup() -> None:
        out.unlink(missing_ok=True)
        database.settle(("users",))

    if system == "copy":
        _, seconds, cpu = timed(benchmark, lambda: database.copy_out(BASELINE_QUERY, out),
                           setup=setup, rounds=ROUNDS)  # fmt: skip
        assert csv_records(out) == loaded_users
        size = out.stat().st_size
        out.unlink()
        recorder.record("export.users.copy", seconds, rows=loaded_users, rounds=ROUNDS,
                        bytes=size, **cpu.extra())  # fmt: skip
        return

    service.set_workers(1)  # an export may also run as a job; the streamed one needs none
    params = {"resource": "users", "format": system}
    # A missing route is a broken build, not a reason to report nothing.
    assert service.has_route("get", "/v1/exports"), "GET /v1/exports is missing from the API"

    def export() -> tuple[int, int]:
        return service.export_to(out, params)

    (status, size), seconds, cpu = timed(benchmark, export, setup=setup, rounds=ROUNDS)
    assert status == 200
    if system == "ndjson":
        with open(out, "rb") as fh:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b""))
        assert lines == loaded_users
    else:
        assert csv_records(out) == loaded_users
    out.unlink()
    recorder.record(f"export.users.{system}", seconds, rows=loaded_users, rounds=ROUNDS,
                    bytes=size, **cpu.extra())  # fmt: skip
