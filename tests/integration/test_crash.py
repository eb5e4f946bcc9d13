"""A worker SIGKILLed mid-import: after a restart the job resumes from its last checkpoint and
every valid row is stored exactly once, every error reported exactly once."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.datafiles import make
from tests.support.processes import Proc
from tests.support.service import Bulkio
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


def _wait_for_progress(service: Bulkio, job_id: str, minimum: int, timeout: float = 60) -> int:
    def progress() -> int | None:
        processed = int(service.client.get(f"/v1/jobs/{job_id}").json()["processed"])
        return processed if processed >= minimum else None

    return wait_until(
        progress, timeout, 0.05, lambda: f"job {job_id} to process {minimum}\n{service.logs()}"
    )


def _kill_mid_import_and_resume(
    service: Bulkio,
    job_id: str,
    total: int,
    before_kill: Callable[[Proc], None] = lambda _worker: None,
) -> dict[str, Any]:
    """SIGKILL every worker once the job has committed 3,000 rows (but not all), start a fresh
    worker, and return the job once it is completed."""
    seen = _wait_for_progress(service, job_id, 3_000)
    for worker in service.workers:
        before_kill(worker)
        worker.signal(signal.SIGKILL)
        worker.stop()
    at_kill = int(service.client.get(f"/v1/jobs/{job_id}").json()["processed"])
    assert seen <= at_kill < total, "the kill must land mid-import"
    service.workers = []
    service.start_worker()
    job = service.wait(job_id, timeout=120)
    assert job["status"] == "completed", job
    return job


def test_sigkill_mid_import_resumes_exactly_once(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 30_000, seed=3)
    job_id = service.upload(path, "users").json()["job_id"]
    job = _kill_mid_import_and_resume(service, job_id, expected.total_records)
    assert job["attempts"] >= 2
    assert (job["processed"], job["successful"], job["failed"]) == (
        expected.total_records,
        expected.successful,
        expected.failed,
    )
    total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchone()
    assert total == distinct == expected.successful
    errors = db.execute(
        "SELECT row_no, line_no, field, code FROM job_errors WHERE job_id = %s ORDER BY 1, 3",
        (job_id,),
    ).fetchall()
    assert sorted(errors, key=lambda e: (e[0], e[2] or "")) == [tuple(e) for e in expected.errors]


def test_a_job_that_keeps_progressing_survives_more_kills_than_max_attempts(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    """4 SIGKILLs (BULKIO_MAX_ATTEMPTS is 3), each after the job committed more batches: the limit
    counts claims without progress, so the job still completes, every valid row exactly once."""
    path, expected = make(datadir, "users", "csv", 60_000, seed=4)
    job_id = service.upload(path, "users").json()["job_id"]
    progress = 0
    for _ in range(4):
        progress = _wait_for_progress(service, job_id, progress + 2_000)
        for worker in service.workers:
            worker.signal(signal.SIGKILL)
            worker.stop()
        service.workers = []
        service.start_worker()
    job = service.wait(job_id, timeout=180)
    assert job["status"] == "completed", job
    assert job["attempts"] >= 5
    assert (job["processed"], job["successful"]) == (expected.total_records, expected.successful)
    total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchone()
    assert total == distinct == expected.successful


def test_sigkill_mid_import_with_set_based_reference_checks_resumes_exactly_once(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    """Clean comments take the direct COPY with their parents locked by the locker connections;
    a SIGKILL mid-import (locks held, a batch half written) loses nothing and duplicates
    nothing, and no comment is left without its parents."""
    rows = 20_000
    for parent in ("users", "articles"):
        path, expected = make(datadir, parent, "ndjson", rows, seed=5, defect_rate=0)
        assert service.import_file(path, parent)["successful"] == expected.successful
    path, expected = make(datadir, "comments", "ndjson", rows, seed=5, defect_rate=0)
    job_id = service.upload(path, "comments").json()["job_id"]

    def uses_set_based_checks(worker: Proc) -> None:
        lines = worker.tail(100_000).splitlines()
        started = [ln for ln in lines if "reference checks" in ln and job_id in ln]
        assert started and "set-based" in started[0], lines[-20:]

    job = _kill_mid_import_and_resume(service, job_id, rows, before_kill=uses_set_based_checks)
    assert (job["processed"], job["successful"], job["failed"]) == (rows, rows, 0)
    total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM comments").fetchone()
    assert total == distinct == rows
    orphans = db.execute(
        "SELECT count(*) FROM comments c WHERE NOT EXISTS (SELECT FROM articles a "
        "WHERE a.id = c.article_id) OR NOT EXISTS (SELECT FROM users u WHERE u.id = c.user_id)"
    ).fetchone()
    assert orphans == (0,)
