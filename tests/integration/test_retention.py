"""Retention: finished jobs past ``retention_days`` are deleted with their stored objects, error
rows, idempotency keys and job_keys; queued, running and recent jobs stay (engine/retention.py,
``bulkio cleanup``, and the workers' periodic run)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine import jobs
from engine.retention import CleanupReport, cleanup
from engine.settings import load_settings
from engine.storage import Storage, open_storage
from tests.support.datafiles import make
from tests.support.service import ROOT, Bulkio
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

OLD = "now() - interval '10 days'"
RETENTION = timedelta(days=7)


@pytest.fixture
def storage(service: Bulkio) -> Storage:
    return open_storage(load_settings(service.env))


@pytest.fixture
def objects_dir(service: Bulkio) -> Path:
    url = service.env["BULKIO_STORAGE_URL"]
    assert url.startswith("file://")
    return Path(url.removeprefix("file://"))


@pytest.fixture
def no_workers(service: Bulkio) -> Iterator[Bulkio]:
    """Jobs stay exactly as the test leaves them (the fixture restores a worker afterwards)."""
    for w in service.workers:
        w.stop()
    service.workers.clear()
    yield service


def _import(service: Bulkio, data: Path | bytes, **kw: Any) -> str:
    if isinstance(data, Path):
        res = service.upload(data, "users", **kw)
    else:
        res = service.upload(None, "users", data=data, filename="u.csv", **kw)
    assert res.status_code == 202, res.text
    job_id = str(res.json()["job_id"])
    service.wait(job_id)
    return job_id


def _finished_long_ago(db: psycopg.Connection[Any], job_id: str, status: str | None = None) -> None:
    db.execute(
        f"UPDATE jobs SET finished_at = {OLD}, created_at = {OLD} - interval '1 hour', "
        "status = coalesce(%s, status) WHERE id = %s",
        (status, job_id),
    )


def _count(db: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = db.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _export_job(db: psycopg.Connection[Any], storage: Storage, status: str, result: bool) -> str:
    """An export job row with an object under exports/<id>/ (its result, or a partial file)."""
    job_id = jobs.new_job_id()
    jobs.create(db, job_id=job_id, kind="export", resource="users", fmt="csv", mode=None,
                owner="tester")  # fmt: skip
    key = f"exports/{job_id}/" + ("users.csv" if result else "users.csv.part")
    storage.put(key, b"id,email\n")
    db.execute(
        f"UPDATE jobs SET status = %s, finished_at = {OLD}, result_key = %s WHERE id = %s",
        (status, key if result else None, job_id),
    )
    return job_id


def test_cleanup_deletes_finished_jobs_past_retention_with_everything_they_own(
    service: Bulkio,
    db: psycopg.Connection[Any],
    datadir: Path,
    storage: Storage,
    objects_dir: Path,
) -> None:
    path, expected = make(datadir, "users", "csv", 300, seed=5)
    # old and finished: completed (with an Idempotency-Key), failed, cancelled, validate_only
    completed = _import(service, path, key="retention-key")
    failed = _import(service, b"nope,header\n1,2\n")
    cancelled = _import(service, make(datadir, "users", "csv", 300, seed=6)[0])
    validated = _import(service, path, mode="validate_only")
    assert _count(db, "SELECT count(*) FROM job_keys WHERE job_id = %s", validated) > 0
    assert service.client.get(f"/v1/jobs/{failed}").json()["status"] == "failed"
    recent = _import(service, make(datadir, "users", "csv", 300, seed=7)[0])
    for w in service.workers:  # from here on, rows change only by the test and the cleanup
        w.stop()
    service.workers.clear()
    for job_id in (completed, failed, validated):
        _finished_long_ago(db, job_id)
    _finished_long_ago(db, cancelled, "cancelled")
    export_done = _export_job(db, storage, "completed", result=True)
    export_failed = _export_job(db, storage, "failed", result=False)
    # old but unfinished: never touched
    queued = service.upload(path, "users").json()["job_id"]
    running = service.upload(path, "users").json()["job_id"]
    db.execute(f"UPDATE jobs SET created_at = {OLD}, updated_at = {OLD} WHERE id = %s", (queued,))
    db.execute(
        f"UPDATE jobs SET status = 'running', created_at = {OLD}, started_at = {OLD}, "
        "lease_owner = 'somewhere:1:x', lease_expires = now() + interval '1 hour' WHERE id = %s",
        (running,),
    )
    # leftovers: an old and a recent upload without a job, an abandoned idempotency key
    orphan_old, orphan_new = str(uuid.uuid4()), str(uuid.uuid4())
    for orphan in (orphan_old, orphan_new):
        storage.put(f"imports/{orphan}/source", b"id\n")
    long_ago = time.time() - 10 * 86400
    os.utime(objects_dir / "imports" / orphan_old / "source", (long_ago, long_ago))
    db.execute(
        "INSERT INTO idempotency_keys (owner, key, created_at) VALUES "
        f"('tester', 'abandoned', {OLD}), ('tester', 'in-flight', now())"
    )

    gone = [completed, failed, cancelled, validated, export_done, export_failed]
    kept = [recent, queued, running]
    for job_id in [completed, cancelled, validated, recent, queued, running]:
        assert (objects_dir / "imports" / job_id / "source").is_file()
    errors_before = _count(
        db, "SELECT count(*) FROM job_errors WHERE job_id = ANY(%s::uuid[])", gone
    )
    assert errors_before >= 3 * expected.failed
    kept_errors = _count(db, "SELECT count(*) FROM job_errors WHERE job_id = %s", recent)
    assert kept_errors > 0

    report = cleanup(db, storage, RETENTION)

    # failed has its upload; the two exports one object each
    assert report == CleanupReport(jobs=6, objects=6, orphans=1, idempotency_keys=1)
    assert _count(db, "SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[])", gone) == 0
    assert _count(db, "SELECT count(*) FROM job_errors WHERE job_id = ANY(%s::uuid[])", gone) == 0
    assert _count(db, "SELECT count(*) FROM job_keys WHERE job_id = %s", validated) == 0
    assert _count(db, "SELECT count(*) FROM idempotency_keys WHERE key = 'retention-key'") == 0
    assert _count(db, "SELECT count(*) FROM idempotency_keys WHERE key = 'abandoned'") == 0
    assert _count(db, "SELECT count(*) FROM idempotency_keys WHERE key = 'in-flight'") == 1
    for job_id in [*gone, orphan_old]:
        for prefix in ("imports", "exports"):
            assert not (objects_dir / prefix / job_id).exists(), (prefix, job_id)
    assert _count(db, "SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[])", kept) == 3
    assert _count(db, "SELECT count(*) FROM job_errors WHERE job_id = %s", recent) == kept_errors
    for job_id in [*kept, orphan_new]:
        assert (objects_dir / "imports" / job_id / "source").is_file()
    assert service.client.get(f"/v1/jobs/{completed}").status_code == 404
    assert service.client.get(f"/v1/jobs/{recent}").json()["status"] == "completed"

    # a second run finds nothing; a new request may reuse the deleted job's Idempotency-Key
    assert cleanup(db, storage, RETENTION) == CleanupReport()
    res = service.upload(path, "users", key="retention-key")
    assert res.status_code == 202 and res.headers["Idempotent-Replayed"] == "false", res.text


def _cli(service: Bulkio, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "cleanup", *args],
        env={**service.env, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_cleanup_uses_the_setting_or_the_flag(
    no_workers: Bulkio, db: psycopg.Connection[Any], storage: Storage, objects_dir: Path
) -> None:
    service = no_workers
    old = _export_job(db, storage, "completed", result=True)
    new = _export_job(db, storage, "cancelled", result=True)
    db.execute("UPDATE jobs SET finished_at = now() - interval '2 days' WHERE id = %s", (new,))
    queued = service.upload(None, "users", data=b"id\n", filename="u.csv").json()["job_id"]

    off = _cli(service, BULKIO_RETENTION_DAYS="0")
    assert off.returncode == 0 and "retention is off" in off.stdout, off
    assert _count(db, "SELECT count(*) FROM jobs") == 3

    default = _cli(service)  # BULKIO_RETENTION_DAYS defaults to 7
    assert default.returncode == 0, default.stderr
    assert "deleted 1 jobs" in default.stdout and "1 of their stored objects" in default.stdout
    assert not (objects_dir / "exports" / old).exists()
    assert (objects_dir / "exports" / new).is_dir()

    flag = _cli(service, "--older-than-days", "1")
    assert flag.returncode == 0 and "deleted 1 jobs" in flag.stdout, flag
    assert not (objects_dir / "exports" / new).exists()
    assert [r[0] for r in db.execute("SELECT id::text FROM jobs")] == [queued]
    assert _cli(service, "--older-than-days", "-1").returncode == 2


def test_workers_apply_the_retention_on_their_own(
    no_workers: Bulkio, db: psycopg.Connection[Any], storage: Storage, objects_dir: Path
) -> None:
    """A worker runs the cleanup when it starts (then hourly): an expired job disappears."""
    service = no_workers
    old = _export_job(db, storage, "completed", result=True)
    keep = _export_job(db, storage, "completed", result=True)
    db.execute("UPDATE jobs SET finished_at = now() WHERE id = %s", (keep,))
    worker = service.start_worker()
    wait_until(
        lambda: not _count(db, "SELECT count(*) FROM jobs WHERE id = %s", old),
        90,
        0.2,
        lambda: f"the expired job to go\n{worker.tail()}",
    )
    assert not (objects_dir / "exports" / old).exists()
    assert (objects_dir / "exports" / keep).is_dir()
    assert _count(db, "SELECT count(*) FROM jobs WHERE id = %s", keep) == 1


@pytest.fixture
def deletions(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """Logs every DELETE statement on job_errors and job_keys (a cascade from jobs included):
    its transaction and the rows it removed, through statement triggers with transition
    tables. Removed again afterwards."""
    db.execute(
        """
        CREATE TABLE test_deletions (xid bigint NOT NULL, tbl text NOT NULL, n bigint NOT NULL);
        CREATE FUNCTION test_log_deletions() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO test_deletions SELECT txid_current(), TG_TABLE_NAME, count(*) FROM gone;
            RETURN NULL;
        END $$;
        CREATE TRIGGER test_deletions AFTER DELETE ON job_errors REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION test_log_deletions();
        CREATE TRIGGER test_deletions AFTER DELETE ON job_keys REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION test_log_deletions();
        """
    )
    try:
        yield db
    finally:
        db.execute(
            "DROP TRIGGER test_deletions ON job_errors; DROP TRIGGER test_deletions ON job_keys; "
            "DROP FUNCTION test_log_deletions(); DROP TABLE test_deletions"
        )


def _import_job_with_rows(db: psycopg.Connection[Any], errors: int, keys: int, old: bool) -> str:
    """A finished import job with ``errors`` error rows (three per record, so chunks end in the
    middle of a record) and ``keys`` job_keys."""
    job_id = jobs.new_job_id()
    jobs.create(db, job_id=job_id, kind="import", resource="users", fmt="csv",
                mode="validate_only", owner="tester")  # fmt: skip
    finished = OLD if old else "now()"
    db.execute(
        f"UPDATE jobs SET status = 'completed', finished_at = {finished}, error_count = %s, "
        "stored_errors = %s WHERE id = %s",
        (errors, errors, job_id),
    )
    db.execute(
        "INSERT INTO job_errors (job_id, row_no, line_no, field, code, message) "
        "SELECT %s, g / 3 + 1, g / 3 + 2, 'f' || g %% 3, 'invalid_format', 'bad' "
        "FROM generate_series(0, %s - 1) g",
        (job_id, errors),
    )
    db.execute(
        "INSERT INTO job_keys (job_id, key) SELECT %s, 'id:' || g FROM generate_series(1, %s) g",
        (job_id, keys),
    )
    return job_id


def test_large_reports_are_deleted_in_chunks_each_its_own_transaction(
    no_workers: Bulkio, deletions: psycopg.Connection[Any], storage: Storage
) -> None:
    db = deletions
    chunk = 1000
    big = _import_job_with_rows(db, 25_000, 4_321, old=True)
    small = _import_job_with_rows(db, 5, 0, old=True)
    recent = _import_job_with_rows(db, 2_000, 10, old=False)

    report = cleanup(db, storage, RETENTION, rows_per_chunk=chunk)

    assert report.jobs == 2
    assert _count(db, "SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[])", [big, small]) == 0
    assert _count(db, "SELECT count(*) FROM job_errors WHERE job_id <> %s", recent) == 0
    assert _count(db, "SELECT count(*) FROM job_keys WHERE job_id <> %s", recent) == 0
    assert _count(db, "SELECT count(*) FROM job_errors WHERE job_id = %s", recent) == 2_000
    # job_keys are dead once their job has finished: those of a recent one go too
    assert _count(db, "SELECT count(*) FROM job_keys WHERE job_id = %s", recent) == 0
    per_transaction = db.execute(
        "SELECT tbl, xid, sum(n) FROM test_deletions GROUP BY tbl, xid"
    ).fetchall()
    deleted = {
        t: sum(int(r[2]) for r in per_transaction if r[0] == t) for t in ("job_errors", "job_keys")
    }
    assert deleted == {"job_errors": 25_005, "job_keys": 4_321 + 10}
    assert max(int(r[2]) for r in per_transaction) <= chunk, per_transaction
    transactions = {t: sum(1 for r in per_transaction if r[0] == t and r[2]) for t in deleted}
    assert transactions == {"job_errors": 25 + 1, "job_keys": 5 + 1}, transactions
