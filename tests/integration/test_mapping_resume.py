"""A job read through a column mapping, its worker SIGKILLed mid-import: the resumed attempt reads
the job's stored mapping and ``header_case`` again, so the file's later batches are read as the
first ones were, and error rows keep naming the file's columns."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.datafiles import make
from tests.support.service import Bulkio
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

MAPPING = {"User ID": "id", "Email Address": "email", "Full Name": "name",
           "Signed Up": "created_at"}  # fmt: skip
#: How the file names each field (``ROLE``: matched by header_case=insensitive).
FILE_NAMES = {"id": "User ID", "email": "Email Address", "name": "Full Name", "role": "ROLE",
              "created_at": "Signed Up"}  # fmt: skip


def test_a_resumed_job_reads_the_same_mapping(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 30_000, seed=5)
    header, rest = path.read_bytes().split(b"\n", 1)
    names = [FILE_NAMES.get(n, n) for n in header.decode().split(",")]
    data = ",".join(names).encode() + b"\n" + rest
    res = service.client.post(
        "/v1/imports",
        data={"resource": "users", "mapping": json.dumps(MAPPING), "header_case": "insensitive"},
        files={"file": ("crm.csv", data)},
    )
    assert res.status_code == 202, res.text
    job_id = res.json()["job_id"]

    def progressed() -> int | None:
        processed = int(service.client.get(f"/v1/jobs/{job_id}").json()["processed"])
        return processed if processed >= 3_000 else None

    wait_until(progressed, 60, 0.05, lambda: f"job {job_id} to progress\n{service.logs()}")
    for worker in service.workers:
        worker.signal(signal.SIGKILL)
        worker.stop()
    at_kill = int(service.client.get(f"/v1/jobs/{job_id}").json()["processed"])
    assert at_kill < expected.total_records, "the kill must land mid-import"
    service.workers = []
    service.start_worker()
    job = service.wait(job_id, timeout=120)
    assert job["status"] == "completed", job
    assert job["attempts"] >= 2
    assert (job["processed"], job["successful"], job["failed"]) == (
        expected.total_records,
        expected.successful,
        expected.failed,
    )
    total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchone()
    assert total == distinct == expected.successful
    errors = db.execute(
        "SELECT row_no, line_no, field, code FROM job_errors WHERE job_id = %s", (job_id,)
    ).fetchall()
    renamed = [(r, ln, FILE_NAMES.get(f, f) if f else f, c) for r, ln, f, c in expected.errors]
    key = lambda e: (e[0], e[2] or "", e[3])  # noqa: E731
    assert sorted(map(tuple, errors), key=key) == sorted(map(tuple, renamed), key=key)
