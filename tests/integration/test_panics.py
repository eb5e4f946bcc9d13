"""A panic (``BaseException``) inside processing (issue #5): the job fails with a clear message
after a bounded number of attempts, counted in PostgreSQL (in-process ``Runtime.run_job`` against
a real, private database: no running worker or reconciler may pick these jobs up).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from polars.exceptions import PanicException

from engine import jobs
from engine.settings import load_settings
from tests.support.database import migrated_database
from tests.support.handmade import GOOD, HEADER
from tests.support.servers import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's): no running worker or reconciler
    may pick these jobs up."""
    yield from migrated_database(pg_server, "bulkio_panic")


def _attempt_until_done(runtime: Any, job_id: str, deliveries: int) -> list[str]:
    """Deliver the job like Dramatiq does (its worker catches BaseException and retries)."""
    raised = []
    for _ in range(deliveries):
        with psycopg.connect(runtime.settings.database_url) as conn:
            job = jobs.get(conn, job_id)
        assert job is not None
        if job.terminal:
            break
        try:
            runtime.run_job(job_id)
        except BaseException as exc:  # what dramatiq.Worker does with it
            raised.append(type(exc).__name__)
    return raised


def _panicking_job(
    database_url: str, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> tuple[Any, str]:
    from engine.imports import run as importer
    from engine.worker import Runtime

    settings = load_settings(
        {}, database_url=database_url, storage_url="memory://", max_attempts=3, lease_seconds=60
    )
    runtime = Runtime(settings)
    job_id = jobs.new_job_id()
    runtime.storage.put(f"imports/{job_id}/source", HEADER + GOOD + b"\n")
    with psycopg.connect(database_url, autocommit=True) as conn:
        jobs.create(
            conn,
            job_id=job_id,
            kind="import",
            resource="users",
            fmt="csv",
            mode="upsert",
            owner="tester",
            object_key=f"imports/{job_id}/source",
        )

    def explode(*_: Any, **__: Any) -> Any:
        raise error

    monkeypatch.setattr(importer, "validate", explode)
    return runtime, job_id


def _job_row(url: str, job_id: str) -> tuple[Any, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status, attempts, error, lease_owner FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_an_exception_fails_the_job_after_bounded_attempts(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, job_id = _panicking_job(database_url, monkeypatch, RuntimeError("kaboom"))
    try:
        raised = _attempt_until_done(runtime, job_id, deliveries=4)  # Retries(max_retries=3)
    finally:
        runtime.reset()
    status, _, error, lease_owner = _job_row(database_url, job_id)
    assert (status, lease_owner) == ("failed", None)
    assert raised == ["RuntimeError"] * 3  # three attempts ran; the fourth delivery gave up
    assert error.startswith("gave up after 3 attempts; last error: internal error (id ")


def test_the_attempts_counted_in_postgresql_never_exceed_max_attempts(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, job_id = _panicking_job(database_url, monkeypatch, RuntimeError("kaboom"))
    try:
        _attempt_until_done(runtime, job_id, deliveries=4)
    finally:
        runtime.reset()
    status, attempts, _, _ = _job_row(database_url, job_id)
    assert (status, attempts) == ("failed", 3)


def test_a_panic_fails_the_job_after_bounded_attempts_with_a_clear_message(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, job_id = _panicking_job(
        database_url, monkeypatch, PanicException("not yet implemented: hostile input")
    )
    try:
        raised = _attempt_until_done(runtime, job_id, deliveries=1)
        status, attempts, error, lease_owner = _job_row(database_url, job_id)
        assert raised == ["PanicException"]
        assert (status, attempts, lease_owner) == ("queued", 1, None), "lease not handed back"
        assert error.startswith("internal error (id "), error  # details only in the log
        _attempt_until_done(runtime, job_id, deliveries=3)
    finally:
        runtime.reset()
    status, attempts, error, _ = _job_row(database_url, job_id)
    assert status == "failed" and attempts <= 4
    assert error.startswith("gave up after 3 attempts; last error: internal error (id "), error
