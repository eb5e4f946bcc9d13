"""A worker that reads for a long time without producing a batch (issue #8), with real worker
processes: it keeps its lease, hands the job back at SIGTERM, and stops on a cancel.

The file: hundreds of thousands of empty gzip members, then gigabytes of whitespace before a JSON
array's ``[`` (a few MB of gzip), then the records. Nothing commits until the records come, so
before the reader's progress hook only a batch boundary could extend the lease or notice a
cancel or a shutdown. The workers here accept a whitespace run that long (their
``BULKIO_MAX_RECORD_BYTES`` is raised; the default cap fails such a file at once); the empty
members come first, so the reader of before (quadratic in the members) never gets past them.
"""

from __future__ import annotations

import gzip
import json
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.processes import Proc
from tests.support.service import Bulkio
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
#: The worker's documented bound to hand its job back and exit after SIGTERM (as test_faults).
SIGTERM_EXIT_BOUND_S = 30.0
#: Empty gzip members ahead of the whitespace (20 bytes each: 30 MB).
EMPTY_MEMBERS = 1_500_000
#: Whitespace ahead of the '[': 15 members of 64 MiB of spaces (960 MiB, ~1 MB of gzip).
BLANK_MEMBERS = 15
BLANK_MEMBER_BYTES = 64 * 1024 * 1024
RECORDS = 1_000
#: The test workers' record cap, the highest allowed: above the whitespace run (the default,
#: 1 MiB, fails such a file at once).
WORKER_ENV = {"BULKIO_MAX_RECORD_BYTES": str(1024**3)}


def _stuck_file() -> bytes:
    users = [
        {
            "id": str(uuid.UUID(int=i + 1)),
            "email": f"stuck{i}@example.com",
            "name": f"Stuck {i}",
            "role": "reader",
            "created_at": "2024-01-01T00:00:00Z",
        }
        for i in range(RECORDS)
    ]
    blank = gzip.compress(b" " * BLANK_MEMBER_BYTES, 9, mtime=0)
    body = gzip.compress(("[" + ",\n".join(map(json.dumps, users)) + "]").encode(), mtime=0)
    return gzip.compress(b"", mtime=0) * EMPTY_MEMBERS + blank * BLANK_MEMBERS + body


@pytest.fixture(scope="module")
def stuck_file() -> bytes:
    return _stuck_file()


class Worker(Proc):
    """A worker process with the raised record cap; its sessions are named ``name``."""

    def __init__(self, service: Bulkio) -> None:
        self.name = f"stuck-{uuid.uuid4().hex[:8]}"
        super().__init__(
            [sys.executable, "-m", "engine.cli", "worker"],
            {**service.env, **WORKER_ENV, "PGAPPNAME": self.name},
            service.workdir / f"worker-{self.name}.log",
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def logged(self, msg: str) -> bool:
        return any(r.get("msg") == msg for r in self.lines())


@pytest.fixture
def fresh(service: Bulkio) -> Iterator[Bulkio]:
    """The service without its default worker; the workers the test starts are stopped after."""
    _stop_all(service)
    yield service
    _stop_all(service)


def _stop_all(service: Bulkio) -> None:
    for w in service.workers:
        w.stop()
    service.workers.clear()


def _start(service: Bulkio) -> Worker:
    worker = Worker(service)
    service.workers.append(worker)
    _until(lambda: worker.logged("worker ready"), 60, "the worker to be ready", service)
    return worker


def _until(check: Callable[[], T | None], timeout: float, what: str, service: Bulkio) -> T:
    """wait_until with the service's logs if it times out."""
    return wait_until(check, timeout, 0.05, lambda: f"{what}\n{service.logs()}")


def _job(db: psycopg.Connection[Any], job_id: str) -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT *, lease_expires > now() AS leased FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None, job_id
    return row


def _upload(service: Bulkio, data: bytes) -> str:
    res = service.upload(None, "users", data=data, filename="stuck.json.gz")
    assert res.status_code == 202, res.text
    return str(res.json()["job_id"])


def _running(db: psycopg.Connection[Any], job_id: str, service: Bulkio) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = _job(db, job_id)
        assert job["status"] in ("queued", "running"), job
        return job if job["status"] == "running" and job["lease_owner"] else None

    return _until(check, 60, f"job {job_id} to be claimed", service)


def _owner(service: Bulkio, job: dict[str, Any]) -> Worker:
    pid = int(job["lease_owner"].split(":")[-2])
    return next(w for w in service.workers if isinstance(w, Worker) and w.pid == pid)


def _stored(db: psycopg.Connection[Any], job_id: str) -> int:
    row = db.execute("SELECT count(*) FROM users WHERE last_import_job = %s", (job_id,)).fetchone()
    return int(row[0]) if row else 0


def test_the_lease_holds_while_nothing_commits(
    fresh: Bulkio, db: psycopg.Connection[Any], stuck_file: bytes
) -> None:
    """2 workers, lease 5 s: while the owner reads the stuck part (no batch, nothing committed)
    its lease is extended again and again and never lapses, so the other worker never takes the
    job over; it completes in one attempt."""
    service = fresh
    for _ in range(2):
        _start(service)
    job_id = _upload(service, stuck_file)
    first = _running(db, job_id, service)
    owner, expiries = first["lease_owner"], {first["lease_expires"]}
    began = time.monotonic()

    def past_the_stuck_part() -> bool:
        job = _job(db, job_id)
        if job["processed"] or job["status"] != "running":
            return True
        assert job["lease_owner"] == owner and job["leased"], job
        expiries.add(job["lease_expires"])
        return False

    wait_until(past_the_stuck_part, 300, 0.2, lambda: f"the first batch\n{service.logs()}")
    stuck = time.monotonic() - began
    assert len(expiries) >= 3, f"the lease was not extended while nothing committed: {expiries}"
    done = service.wait(job_id, timeout=300)
    assert done["status"] == "completed", (done, service.logs())
    assert (done["processed"], done["successful"]) == (RECORDS, RECORDS), done
    final = _job(db, job_id)
    assert final["attempts"] == 1, final
    assert _stored(db, job_id) == RECORDS
    assert not any(w.logged("lease lost; another worker owns the job") for w in service.workers
                   if isinstance(w, Worker))  # fmt: skip
    print(f"{stuck:.1f} s without a commit, {len(expiries) - 1} lease extensions")


def test_sigterm_while_nothing_commits_hands_the_job_back(
    fresh: Bulkio, db: psycopg.Connection[Any], stuck_file: bytes
) -> None:
    """SIGTERM to the worker reading the stuck part: it hands the job back (status queued,
    nothing processed, the attempt not counted) and exits with status 0 within the documented
    bound, without waiting for a batch boundary; a fresh worker then completes the job."""
    service = fresh
    worker = _start(service)
    job_id = _upload(service, stuck_file)
    _running(db, job_id, service)
    time.sleep(1.5)  # well inside the empty members and whitespace
    assert _job(db, job_id)["processed"] == 0
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    status = worker.wait(timeout=SIGTERM_EXIT_BOUND_S + 30)
    seconds = time.monotonic() - started
    assert status == 0, (status, worker.tail())
    assert seconds <= SIGTERM_EXIT_BOUND_S, (seconds, worker.tail())
    assert worker.logged("import handed back at shutdown"), worker.tail()
    job = _job(db, job_id)
    assert (job["status"], job["processed"], job["lease_owner"]) == ("queued", 0, None), job
    assert job["attempts"] == 0, job
    worker.stop()
    service.workers.remove(worker)

    _start(service)
    done = service.wait(job_id, timeout=300)
    assert done["status"] == "completed", (done, service.logs())
    assert done["processed"] == RECORDS, done
    assert _job(db, job_id)["attempts"] == 1
    assert _stored(db, job_id) == RECORDS
    print(f"seconds from SIGTERM to exit: {seconds:.2f}")


def test_cancel_while_nothing_commits_stops_the_reader(
    fresh: Bulkio, db: psycopg.Connection[Any], stuck_file: bytes
) -> None:
    """A cancel during the stuck part stops the attempt there (nothing processed, nothing
    stored) instead of at the first batch boundary after it; the worker takes the next job."""
    service = fresh
    worker = _start(service)
    job_id = _upload(service, stuck_file)
    _running(db, job_id, service)
    time.sleep(1.5)
    assert _job(db, job_id)["processed"] == 0
    res = service.client.post(f"/v1/jobs/{job_id}/cancel")
    assert res.status_code == 202, res.text
    job = service.wait(job_id, timeout=60)
    assert (job["status"], job["processed"]) == ("cancelled", 0), job
    assert _stored(db, job_id) == 0
    assert worker.logged("import cancelled"), worker.tail()
    # the worker is free again: a small clean file completes
    small = gzip.compress(b'[{"id": "00000000-0000-0000-0000-0000000000aa", "email": '
                          b'"after@example.com", "name": "After", "role": "reader", '
                          b'"created_at": "2024-01-01T00:00:00Z"}]')  # fmt: skip
    after = service.wait(_upload(service, small), timeout=60)
    assert (after["status"], after["processed"]) == ("completed", 1), after
