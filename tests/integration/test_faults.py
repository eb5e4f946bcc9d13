"""Faults during imports, with real worker processes and servers (hardening issue #5).

Every test checks *exactly once* at the end: each valid row of the file is stored once, each
planted defect is reported once, and the job's counters match the file's known expectations
(``datafiles.make``). The faults: SIGKILL, SIGTERM, SIGSTOP (a stale owner coming back), Redis
restarted empty, PostgreSQL backends terminated, duplicated queue messages, and cancellation.

Workers here are started with ``PGAPPNAME`` set, so their PostgreSQL backends can be told apart
in ``pg_stat_activity``; the tests stop their own workers at the end and the ``service`` fixture
starts a fresh one for the next test. Random fault points come from a seeded generator
(``BULKIO_FAULT_SEED`` overrides the seed, to explore other points).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.rows import dict_row

from engine.queue import Doorbell
from engine.settings import load_settings
from tests.support.datafiles import gen, make
from tests.support.processes import Proc
from tests.support.service import Bulkio
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
TERMINAL = ("completed", "failed", "cancelled")

SEED = int(os.environ.get("BULKIO_FAULT_SEED", "20240605"))
#: Rows of the "large" imports: 100 batches at the test batch size of 1,000 rows (a few
#: seconds of work: the fault must land mid-import, not after the last batch).
BIG = 100_000
#: The issue's bound: after a worker is available again, the job moves within this time.
RESUME_BOUND_S = 30.0
#: Generous bound for a SIGTERMed worker to hand its job back and exit.
SIGTERM_EXIT_BOUND_S = 30.0
#: Seed of the users/articles files that generated comments files point into.
PARENT_SEED = 7


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.fixture
def fresh(service: Bulkio) -> Iterator[Bulkio]:
    """The service without its default worker; every worker the test starts is stopped after."""
    _stop_all(service)
    yield service
    _stop_all(service)


def _stop_all(service: Bulkio) -> None:
    for w in service.workers:
        w.signal(signal.SIGCONT)  # a SIGSTOPped worker must be able to hear SIGTERM
        w.stop()
    service.workers.clear()


class Worker(Proc):
    """A worker process whose PostgreSQL sessions carry ``application_name`` = ``name``."""

    def __init__(self, service: Bulkio) -> None:
        self.name = f"fault-{uuid.uuid4().hex[:8]}"
        super().__init__(
            [sys.executable, "-m", "engine.cli", "worker"],
            {**service.env, "PGAPPNAME": self.name},
            service.workdir / f"worker-{self.name}.log",
        )

    def backends(self, db: psycopg.Connection[Any]) -> list[tuple[int, str, bool]]:
        """(pid, state, in a transaction) of this worker's PostgreSQL sessions."""
        return [
            (int(r[0]), str(r[1]), bool(r[2]))
            for r in db.execute(
                "SELECT pid, state, xact_start IS NOT NULL FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                (self.name,),
            )
        ]

    def kill(self, db: psycopg.Connection[Any]) -> None:
        """SIGKILL, then wait until PostgreSQL has ended its sessions (a COMMIT already sent
        must not land after the caller reads the job's progress)."""
        self.signal(signal.SIGKILL)
        self.stop()
        _until(lambda: not self.backends(db), 30, f"sessions of {self.name} to end")


def _start_worker(service: Bulkio) -> Worker:
    worker = Worker(service)
    service.workers.append(worker)
    return worker


def _log_lines(proc: Proc) -> list[dict[str, Any]]:
    out = []
    for line in proc.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _ready_at(service: Bulkio, proc: Proc, timeout: float = 90) -> float:
    """Wall-clock time (epoch s) at which the worker logged that it is ready."""
    found = _until(
        lambda: next((r for r in _log_lines(proc) if r.get("msg") == "worker ready"), None),
        timeout,
        f"worker {proc.pid} ready",
        service,
    )
    return datetime.fromisoformat(found["ts"]).timestamp()


def _until(
    check: Callable[[], T | None], timeout: float, what: str, service: Bulkio | None = None
) -> T:
    """wait_until with the workers' logs and sessions (when given the service) if it times out."""

    def message() -> str:
        return f"{what}\n{_worker_logs(service) if service is not None else ''}"

    return wait_until(check, timeout, 0.05, message)


def _worker_logs(service: Bulkio, lines: int = 25) -> str:
    """The end of each worker's log without the per-batch lines, and their sessions."""
    parts = [_sessions(service)]
    for w in service.workers:
        text = w.log.read_text(errors="replace").splitlines()
        kept = [line[:500] for line in text if '"batch committed"' not in line]
        parts.append(f"--- {w.log.name} (pid {w.pid})\n" + "\n".join(kept[-lines:]))
    return "\n".join(parts)


def _sessions(service: Bulkio) -> str:
    with psycopg.connect(service.env["BULKIO_DATABASE_URL"], autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, pid, state, xact_start IS NOT NULL, wait_event_type, "
            "left(query, 120) FROM pg_stat_activity WHERE application_name LIKE 'fault-%' "
            "ORDER BY 1, 2"
        ).fetchall()
    return "--- sessions\n" + "\n".join(map(str, rows))


def _job(db: psycopg.Connection[Any], job_id: str) -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None, job_id
    return row


def _wait_processed(
    service: Bulkio, db: psycopg.Connection[Any], job_id: str, minimum: int, timeout: float = 120
) -> int:
    def check() -> int | None:
        job = _job(db, job_id)
        if job["status"] in TERMINAL:
            raise AssertionError(
                f"job ended before reaching {minimum} rows: {job}\n{_worker_logs(service)}"
            )
        return int(job["processed"]) if job["processed"] >= minimum else None

    return _until(check, timeout, f"job {job_id} to process {minimum} rows", service)


def _owner_pid(db: psycopg.Connection[Any], job_id: str) -> int | None:
    owner = _job(db, job_id)["lease_owner"]
    return int(owner.split(":")[-2]) if owner else None


def _proc_of(service: Bulkio, pid: int) -> Proc:
    return next(w for w in service.workers if w.pid == pid)


def _upload(service: Bulkio, path: Path, resource: str = "users") -> str:
    res = service.upload(path, resource)
    assert res.status_code == 202, res.text
    return str(res.json()["job_id"])


def _assert_exactly_once(
    service: Bulkio, db: psycopg.Connection[Any], job_id: str, expected: Any, timeout: float = 180
) -> dict[str, Any]:
    """The job completed, every valid row of the file is stored once, every error reported once."""
    job = service.wait(job_id, timeout=timeout)
    assert job["status"] == "completed", f"{job}\n{service.logs()}"
    assert (job["processed"], job["successful"], job["failed"]) == (
        expected.total_records,
        expected.successful,
        expected.failed,
    ), job
    assert job["inserted_records"] == expected.successful, job
    table = {"users": "users", "articles": "articles", "comments": "comments"}[expected.resource]
    ids = [
        r[0]
        for r in db.execute(f"SELECT id::text FROM {table} WHERE last_import_job = %s", (job_id,))
    ]
    assert len(ids) == len(set(ids)) == expected.successful
    assert set(ids) == set(expected.valid_id_list())
    errors = db.execute(
        "SELECT row_no, line_no, field, code FROM job_errors WHERE job_id = %s", (job_id,)
    ).fetchall()
    assert _sorted_errors(errors) == _sorted_errors(expected.errors)
    return job


def _comment_files(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path, seeds: range, rows: int
) -> list[tuple[Path, Any]]:
    """Comments files of distinct seeds over the same parents, which are imported first.

    Comments have no natural key and distinct seeds give distinct ids, so concurrent jobs of
    these files cannot change each other's outcome (users files of different seeds can: their
    emails collide now and then)."""
    parent_rows = 2_000
    for resource in ("users", "articles"):
        path, expected = make(datadir, resource, "csv", parent_rows, seed=PARENT_SEED)
        _assert_exactly_once(service, db, _upload(service, path, resource), expected)
    parent = gen.Parent(PARENT_SEED, parent_rows, 0.05)
    files = []
    for seed in seeds:
        path = datadir / f"comments-{rows}-{seed}-over-{PARENT_SEED}.csv"
        exp_path = Path(f"{path}.expected.json")
        if path.exists() and exp_path.exists():
            expected = gen.Expected.load(str(exp_path))
        else:
            expected = gen.generate(
                "comments", "csv", rows, seed=seed, defect_rate=0.05, out_path=str(path),
                users=parent, articles=parent,
            )  # fmt: skip
        files.append((path, expected))
    return files


def _sorted_errors(rows: Any) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in rows), key=lambda e: (e[0], e[2] or "", e[3]))


# ------------------------------------------------------------------------------------ SIGKILL


def test_sigkill_at_random_points_resumes_exactly_once(
    fresh: Bulkio, db: psycopg.Connection[Any], datadir: Path, rng: random.Random
) -> None:
    """4 SIGKILLs: 2 imports of 100k users, each killed twice at a random progress point (and a
    random moment within a batch). After each restart the job moves again within 30 s of the
    new worker being ready; in the end every valid row is stored exactly once.

    Two kills per import, not more: a claim that dies counts as an attempt (max_attempts=3).
    """
    service = fresh
    worker = _start_worker(service)
    resumes: list[float] = []
    for file_seed in (31, 32):
        db.execute("TRUNCATE users CASCADE")
        path, expected = make(datadir, "users", "csv", BIG, seed=file_seed)
        job_id = _upload(service, path)
        for low, high in ((0.08, 0.4), (0.5, 0.85)):
            target = int(expected.total_records * rng.uniform(low, high))
            _wait_processed(service, db, job_id, target)
            time.sleep(rng.uniform(0, 0.4))  # land anywhere within a batch
            worker.kill(db)
            service.workers.remove(worker)
            at_kill = int(_job(db, job_id)["processed"])
            assert at_kill < expected.total_records, "the kill must land mid-import"
            worker = _start_worker(service)
            ready = _ready_at(service, worker)
            _wait_processed(service, db, job_id, at_kill + 1, timeout=90)
            resumes.append(time.time() - ready)
            assert resumes[-1] <= RESUME_BOUND_S, (resumes, service.logs())
        job = _assert_exactly_once(service, db, job_id, expected)
        assert job["attempts"] == 3, job
    print(f"seed={SEED} resume seconds after restart: {[round(r, 1) for r in resumes]}")


# ------------------------------------------------------------------------------- Redis restart


def test_redis_restarted_empty_every_job_still_finishes(
    fresh: Bulkio, db: psycopg.Connection[Any], datadir: Path, redis_server: Any
) -> None:
    """8 imports of 15k comments on 2 workers; Redis is restarted empty twice: once while the
    first two jobs run and six wait in the queue, once while a job runs after some finished and
    others still wait. Every lost message is re-sent from PostgreSQL by the reconciler, every job
    completes, each with exactly its file's rows and errors."""
    service = fresh
    for _ in range(2):
        _start_worker(service)
    files = _comment_files(service, db, datadir, range(41, 49), 15_000)
    job_ids = [_upload(service, path, "comments") for path, _ in files]

    def statuses() -> dict[str, int]:
        counts: dict[str, int] = {}
        for (status,) in db.execute("SELECT status FROM jobs WHERE id = ANY(%s)", (job_ids,)):
            counts[status] = counts.get(status, 0) + 1
        return counts

    def moment(running: int, finished: int) -> dict[str, int] | None:
        now = statuses()
        done = sum(now.get(t, 0) for t in TERMINAL)
        ready = now.get("running", 0) >= running and done >= finished and now.get("queued")
        return now if ready else None

    first = _until(lambda: moment(running=2, finished=0), 60, "two running jobs")
    redis_server.restart(empty=True)
    second = _until(lambda: moment(running=1, finished=2), 120, "two finished, one running")
    redis_server.restart(empty=True)
    for job_id, (_, expected) in zip(job_ids, files, strict=True):
        _assert_exactly_once(service, db, job_id, expected, timeout=240)
    for worker in service.workers:
        assert worker.alive(), worker.tail()
    print(f"statuses at the restarts: {first}, {second}")


# ------------------------------------------------------------------- PostgreSQL connection lost

_TERMINATE_MID_BATCH = """
SELECT pid, xact_start IS NOT NULL AS in_tx, pg_terminate_backend(pid)
FROM pg_stat_activity
WHERE datname = current_database() AND application_name = %(app)s
  AND EXISTS (SELECT 1 FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = %(app)s
                AND state <> 'idle' AND xact_start IS NOT NULL)
"""


def test_postgres_connections_terminated_mid_batch_job_retries_exactly_once(
    fresh: Bulkio, db: psycopg.Connection[Any], datadir: Path, rng: random.Random
) -> None:
    """3 imports of 100k users; in each, at a random progress point and while one of the worker's
    sessions is inside a batch's transaction, every session of the worker is terminated
    (``pg_terminate_backend``). The attempt fails, is recorded, and is retried; the job resumes
    from its checkpoint and ends with every row exactly once."""
    service = fresh
    worker = _start_worker(service)
    for file_seed in (51, 52, 53):
        db.execute("TRUNCATE users CASCADE")
        path, expected = make(datadir, "users", "csv", BIG, seed=file_seed)
        job_id = _upload(service, path)
        _wait_processed(service, db, job_id, int(expected.total_records * rng.uniform(0.1, 0.7)))
        victims = _until(
            lambda: db.execute(_TERMINATE_MID_BATCH, {"app": worker.name}).fetchall(),
            60,
            "a batch transaction of the worker",
            service,
        )
        assert any(in_tx for _, in_tx, _ in victims), victims
        at_kill = int(_job(db, job_id)["processed"])
        assert at_kill < expected.total_records, "the termination must land mid-import"
        job = _assert_exactly_once(service, db, job_id, expected)
        assert job["attempts"] == 2, job
        assert worker.alive(), worker.tail()
        assert _job(db, job_id)["error"], "the failed attempt is recorded"


# ------------------------------------------------------------------------------------ SIGTERM


def test_a_burst_of_stop_signals_still_stops_the_worker(fresh: Bulkio) -> None:
    """`make run` forwards Ctrl-C/TERM to every worker while an operator's `pkill` may send its
    own: signals arriving while the handler of the first one runs must not hang the worker
    (it once deadlocked on the lock of the Event the first handler was setting)."""
    for round_ in range(5):
        worker = _start_worker(fresh)
        _until(lambda w=worker: any(r.get("msg") == "worker ready" for r in _log_lines(w)),
               30, "the worker to be ready", fresh)  # fmt: skip
        deadline = time.monotonic() + SIGTERM_EXIT_BOUND_S
        i = 0
        while worker.alive() and time.monotonic() < deadline:  # signals all through shutdown
            worker.signal(signal.SIGTERM if i % 2 else signal.SIGINT)
            i += 1
            time.sleep(0.0002)
        status = worker.wait(timeout=5)
        assert status is not None, (round_, "the worker hangs", worker.tail())
        # Exit status 0, or the default action of a signal that arrived after the worker
        # stopped, while the interpreter was finalising (spam beyond any operator's).
        assert status in (0, -signal.SIGTERM, -signal.SIGINT), (round_, status, worker.tail())
        assert any(r.get("msg") == "worker stopped" for r in _log_lines(worker)), worker.tail()
        worker.stop()
        fresh.workers.remove(worker)


def test_sigterm_hands_the_job_back_and_another_worker_finishes_it(
    fresh: Bulkio, db: psycopg.Connection[Any], datadir: Path, rng: random.Random
) -> None:
    """3 SIGTERMs during one import of 100k users on 2 workers, each to the worker that owns the
    job at a random progress point: it hands the job back at its next batch boundary and exits
    (status 0) within 30 s, the other worker continues within 30 s, a fresh worker replaces the
    stopped one. Graceful hand-backs do not use up attempts; every row is stored exactly once."""
    service = fresh
    for _ in range(2):
        _start_worker(service)
    path, expected = make(datadir, "users", "csv", BIG, seed=71)
    job_id = _upload(service, path)
    exits: list[float] = []
    for low, high in ((0.05, 0.25), (0.35, 0.55), (0.65, 0.85)):
        _wait_processed(service, db, job_id, int(expected.total_records * rng.uniform(low, high)))
        pid = _owner_pid(db, job_id)
        assert pid is not None
        owner = _proc_of(service, pid)
        started = time.monotonic()
        owner.signal(signal.SIGTERM)
        status = owner.wait(timeout=SIGTERM_EXIT_BOUND_S + 30)
        exits.append(time.monotonic() - started)
        assert status == 0, (status, owner.tail())
        assert exits[-1] <= SIGTERM_EXIT_BOUND_S, (exits, owner.tail())
        owner.stop()
        service.workers.remove(owner)
        assert any(r.get("msg") == "import handed back at shutdown" for r in _log_lines(owner))
        job = _job(db, job_id)
        at_exit = int(job["processed"])
        assert at_exit < expected.total_records, "the SIGTERM must land mid-import"
        assert job["lease_owner"] is None or f":{pid}:" not in job["lease_owner"], job
        handed_back = time.monotonic()
        _wait_processed(service, db, job_id, at_exit + 1, timeout=90)
        assert time.monotonic() - handed_back <= RESUME_BOUND_S
        _start_worker(service)
    job = _assert_exactly_once(service, db, job_id, expected)
    assert job["attempts"] == 1, job
    print(f"seconds from SIGTERM to exit: {[round(e, 2) for e in exits]}")


# ------------------------------------------------------------------------- duplicate delivery


def test_duplicate_messages_delivered_concurrently_commit_each_batch_once(
    fresh: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    """3 imports of 40k users on 2 workers; each job's message is sent 4 times at once (both
    workers race to claim it) and again every 0.1 s while it runs. Exactly one claim wins
    (attempts stays 1) and every batch commits once. (A duplicate that arrives after the lease
    expired, while the first owner still lives, is the frozen-owner test below.)"""
    service = fresh
    for _ in range(2):
        _start_worker(service)
    doorbell = Doorbell(load_settings(service.env))
    try:
        for file_seed in (61, 62, 63):
            db.execute("TRUNCATE users CASCADE")
            path, expected = make(datadir, "users", "csv", 40_000, seed=file_seed)
            job_id = _upload(service, path)
            for _ in range(3):
                doorbell.ring(job_id)
            rings = [4]  # the upload's message and the three above

            def rung_until_done(job_id: str = job_id, rings: list[int] = rings) -> bool:
                if _job(db, job_id)["status"] in TERMINAL:
                    return True
                doorbell.ring(job_id)
                rings[0] += 1
                return False

            _until(rung_until_done, 180, f"job {job_id} to end while its doorbell rings", service)
            job = _assert_exactly_once(service, db, job_id, expected)
            assert job["attempts"] == 1, (job, rings[0])
    finally:
        doorbell.close()


def _stop_mid_batch(worker: Worker, db: psycopg.Connection[Any]) -> None:
    """SIGSTOP ``worker`` while one of its sessions is inside a batch transaction."""
    in_batch = (
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL"
    )
    for _ in range(200):
        _until(lambda: db.execute(in_batch, (worker.name,)).fetchone(), 60, "a batch")
        worker.signal(signal.SIGSTOP)
        time.sleep(0.1)  # a statement already sent completes; then the session waits
        if db.execute(in_batch, (worker.name,)).fetchone():
            return
        worker.signal(signal.SIGCONT)
    raise AssertionError(f"could not stop {worker.name} inside a batch")


def _stop_before_commit(
    service: Bulkio, worker: Worker, db: psycopg.Connection[Any], job_id: str
) -> None:
    """SIGSTOP ``worker`` after its batch wrote its rows and its checkpoint, before COMMIT: the
    worst place, holding locks on the rows and on the job row. A lock on the job row held for
    a moment here gates the worker's checkpoint statement, which completes after the stop."""
    checkpoint_waits = (
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
        "AND wait_event_type = 'Lock' AND query LIKE '%%UPDATE jobs SET next_batch%%'"
    )
    with psycopg.connect(str(db.info.dsn), autocommit=False) as gate:
        # NO KEY UPDATE: blocks the checkpoint, not the batch's foreign-key checks before it
        gate.execute("SELECT 1 FROM jobs WHERE id = %s FOR NO KEY UPDATE", (job_id,))
        _until(
            lambda: db.execute(checkpoint_waits, (worker.name,)).fetchone(),
            60,
            "the checkpoint to wait",
            service,
        )
        worker.signal(signal.SIGSTOP)
        gate.commit()
    # the checkpoint completes (then the session waits for the frozen client, until the server
    # ends its transaction)
    _until(
        lambda: not db.execute(checkpoint_waits, (worker.name,)).fetchone(),
        30,
        "the checkpoint",
        service,
    )


def test_frozen_owner_neither_blocks_the_job_nor_commits_after_takeover(
    fresh: Bulkio, db: psycopg.Connection[Any], datadir: Path, rng: random.Random
) -> None:
    """The duplicate that matters: the job's owner freezes (SIGSTOP) inside a batch transaction,
    holding its locks. Once its lease expires the reconciler re-sends the job, the other worker
    claims it and commits batches *while the owner is still frozen*; then the owner wakes up
    with its batch half done and must not commit it. Done 2 times in one import of 100k users,
    each worker frozen once at a random progress point: first inside any of its transactions
    (mostly a batch's; sometimes its reconciler's, holding the reconcilers' advisory lock), then
    after the batch's checkpoint statement, before COMMIT, holding locks on the rows it wrote
    and on the job row. Every row is stored exactly once.

    Without the reconciler's FOR NO KEY UPDATE the first freeze blocks the job once the batch
    wrote error rows (their foreign key locks the job row); without the server ending the frozen
    transaction (idle_in_transaction_session_timeout) the second always does."""
    service = fresh
    workers = [_start_worker(service) for _ in range(2)]
    path, expected = make(datadir, "users", "csv", BIG, seed=72)
    job_id = _upload(service, path)
    for low, high, before_commit in ((0.1, 0.35, False), (0.5, 0.75, True)):
        _wait_processed(service, db, job_id, int(expected.total_records * rng.uniform(low, high)))
        pid = _owner_pid(db, job_id)
        frozen = next(w for w in workers if w.pid == pid)
        other = next(w for w in workers if w.pid != pid)
        if before_commit:
            _stop_before_commit(service, frozen, db, job_id)
        else:
            _stop_mid_batch(frozen, db)
        at_freeze = int(_job(db, job_id)["processed"])
        _wait_processed(service, db, job_id, at_freeze + 1, timeout=60)
        assert f":{other.pid}:" in (_job(db, job_id)["lease_owner"] or "")
        seen = len(_log_lines(frozen))
        frozen.signal(signal.SIGCONT)

        def gave_up(w: Worker = frozen, n: int = seen) -> bool:
            return _gave_up(_log_lines(w)[n:])

        _until(gave_up, 60, f"{frozen.name} to give up its stale batch", service)
    _assert_exactly_once(service, db, job_id, expected)
    for worker in workers:
        assert worker.alive(), worker.tail()


def _gave_up(lines: list[dict[str, Any]]) -> bool:
    """The worker found its lease taken at its checkpoint, or its transaction ended by the
    server (then the attempt fails, and its retry finds the job claimed by the other worker)."""
    return any(
        r.get("msg") in ("lease lost; another worker owns the job",
                         "job attempt failed; it will be retried")
        for r in lines
    )  # fmt: skip


# ------------------------------------------------------------------------------------- cancel


def test_cancel_stops_a_running_import_at_a_batch_boundary(
    fresh: Bulkio, db: psycopg.Connection[Any], datadir: Path, rng: random.Random
) -> None:
    """3 imports of 100k users cancelled at random progress points on 1 worker: each stops at
    the next batch boundary with status ``cancelled``; its committed batches stay (rows stored ==
    ``successful``, errors == the planted ones of the processed rows) and nothing moves after.
    A job queued behind it is cancelled at once and never runs. Cancelling a finished job is
    409, an unknown one 404."""
    service = fresh
    _start_worker(service)
    for file_seed in (81, 82, 83):
        db.execute("TRUNCATE users CASCADE")
        path, expected = make(datadir, "users", "csv", BIG, seed=file_seed)
        job_id = _upload(service, path)
        waiting = _upload(service, path)  # queued behind: the only worker is busy
        _wait_processed(service, db, job_id, int(expected.total_records * rng.uniform(0.1, 0.7)))
        # the queued one first: once the running one stops, the worker would take it
        res = service.client.post(f"/v1/jobs/{waiting}/cancel")
        assert res.status_code == 202 and res.json()["status"] == "cancelled", res.text
        res = service.client.post(f"/v1/jobs/{job_id}/cancel")
        assert res.status_code == 202, res.text
        assert res.json()["status"] in ("running", "cancelled"), res.json()

        job = service.wait(job_id, timeout=120)
        assert job["status"] == "cancelled", job
        processed = int(job["processed"])
        assert 0 < processed < expected.total_records, job
        assert job["total_records"] == processed
        assert job["successful"] + job["failed"] == processed
        stored = _stored_rows(db, job_id)
        assert stored == job["successful"], (stored, job)
        errors = db.execute(
            "SELECT row_no, line_no, field, code FROM job_errors WHERE job_id = %s", (job_id,)
        ).fetchall()
        assert _sorted_errors(errors) == _sorted_errors(
            e for e in expected.errors if e[0] <= processed
        )
        time.sleep(3)  # longer than the lease and a reconciler round
        assert service.client.get(f"/v1/jobs/{job_id}").json()["processed"] == processed
        assert _stored_rows(db, job_id) == stored

        queued = _job(db, waiting)
        assert (queued["status"], queued["processed"], queued["attempts"]) == ("cancelled", 0, 0)
        assert queued["started_at"] is None
        for done in (job_id, waiting):
            assert service.client.post(f"/v1/jobs/{done}/cancel").status_code == 409
    assert service.client.post(f"/v1/jobs/{uuid.uuid4()}/cancel").status_code == 404
    assert service.client.post("/v1/jobs/not-a-job/cancel").status_code == 404


def _stored_rows(db: psycopg.Connection[Any], job_id: str) -> int:
    row = db.execute("SELECT count(*) FROM users WHERE last_import_job = %s", (job_id,)).fetchone()
    return int(row[0]) if row else 0
