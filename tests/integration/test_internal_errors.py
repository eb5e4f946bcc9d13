"""Internal error texts (host names, SQL, values) never reach a job's client: the job shows a
stable message with an error id, the worker's log has the details under the same id."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from api.views import job_view
from engine import jobs
from engine.errors import MissingColumns
from engine.settings import load_settings
from engine.worker import Runtime, client_message
from tests.support.database import migrated_database
from tests.support.servers import PostgresServer
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

#: What a driver's message may carry: a host name and a record's value.
SECRET_HOST = "db-primary-7.corp.internal"
SECRET_VALUE = "ann.secret@example.com"
ERROR_ID = re.compile(r"internal error \(id ([0-9a-f]{12})\)")

CSV = (
    b"id,email,name,role,created_at\n"
    b"00000000-0000-4000-8000-000000000001," + SECRET_VALUE.encode() + b",Ann,admin,2024-01-01\n"
)


@pytest.fixture
def users_insert_fails(db: psycopg.Connection[Any]) -> Iterator[None]:
    """Every insert into users fails inside PostgreSQL with a message naming a host and the row's
    email, as a driver error would."""
    db.execute(
        "CREATE FUNCTION test_unreachable() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"RAISE EXCEPTION 'could not reach {SECRET_HOST}:5432 while writing %', NEW.email; "
        "END $$"
    )
    db.execute(
        "CREATE TRIGGER test_unreachable BEFORE INSERT ON users "
        "FOR EACH ROW EXECUTE FUNCTION test_unreachable()"
    )
    try:
        yield
    finally:
        db.execute("DROP TRIGGER IF EXISTS test_unreachable ON users")
        db.execute("DROP FUNCTION IF EXISTS test_unreachable()")


def _log_records(service: Bulkio) -> list[dict[str, Any]]:
    records = []
    for proc in service.workers:
        for line in proc.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
    return records


def test_a_driver_error_shows_only_an_error_id_and_the_log_has_the_details(
    service: Bulkio, users_insert_fails: None
) -> None:
    res = service.upload(None, "users", fmt="csv", data=CSV, filename="users.csv")
    assert res.status_code == 202, res.text
    job_id = res.json()["job_id"]
    job = service.wait(job_id)
    assert job["status"] == "failed", job
    found = ERROR_ID.search(job["error"])
    assert found, job["error"]
    error_id = found.group(1)
    assert job["error"] == f"gave up after 3 attempts; last error: internal error (id {error_id})"
    for path in (f"/v1/imports/{job_id}", f"/v1/jobs/{job_id}", "/v1/jobs"):
        body = service.client.get(path).text
        assert SECRET_HOST not in body and "RAISE" not in body, path
    # The value is the user's own record, still shown where it belongs: nowhere in the job
    # status's error text.
    assert SECRET_VALUE not in job["error"]

    logged = [r for r in _log_records(service) if r.get("error_id") == error_id]
    assert len(logged) == 1, _log_records(service)[-5:]
    assert logged[0]["job_id"] == job_id
    assert SECRET_HOST in logged[0]["exc"] and SECRET_VALUE in logged[0]["exc"]
    # Every attempt logged its own id; the job names the last one.
    attempts = [r for r in _log_records(service) if r.get("job_id") == job_id and "error_id" in r]
    assert len({r["error_id"] for r in attempts}) == len(attempts) == 3


@pytest.fixture
def private_db(pg_server: PostgresServer) -> Iterator[str]:
    """A database of its own: no running worker or reconciler picks up these jobs."""
    yield from migrated_database(pg_server)


def test_an_export_failure_is_hidden_the_same_way(
    private_db: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from engine.exports import run as exporter

    def unreachable(*_: Any) -> Iterator[Any]:
        # A generator like the real one: it fails when the encoder first reads from it.
        raise psycopg.OperationalError(f"connection to server at {SECRET_HOST} failed")
        yield

    monkeypatch.setattr(exporter, "export_batches", unreachable)
    settings = load_settings({}, database_url=private_db, storage_url="memory://")
    runtime = Runtime(settings)
    job_id = jobs.new_job_id()
    with psycopg.connect(private_db, autocommit=True) as conn:
        jobs.create(
            conn,
            job_id=job_id,
            kind="export",
            resource="users",
            fmt="csv",
            mode=None,
            owner="tester",
            options={"resource": "users", "format": "csv"},
        )
    try:
        with caplog.at_level(logging.ERROR, logger="bulkio.worker"):
            for _ in range(4):  # what Dramatiq does: deliver until the claim gives up
                with contextlib.suppress(psycopg.OperationalError):
                    runtime.run_job(job_id)
    finally:
        runtime.reset()
    with psycopg.connect(private_db) as conn:
        job = jobs.get(conn, job_id)
    assert job is not None and job.status == "failed"
    view = job_view(job, base_url="http://bulkio.test")
    assert view.error is not None
    found = ERROR_ID.search(view.error)
    assert found and SECRET_HOST not in view.error, view.error
    records = [r for r in caplog.records if getattr(r, "error_id", None) == found.group(1)]
    assert len(records) == 1 and records[0].exc_info is not None
    assert SECRET_HOST in str(records[0].exc_info[1])


def test_file_errors_keep_their_message() -> None:
    """Errors meant for the user (an unreadable file) are shown as they are."""
    exc = MissingColumns("the CSV header lacks required columns: email")
    assert client_message(exc, "0123456789ab") == str(exc)
    assert client_message(RuntimeError("at 10.0.0.7"), "0123456789ab") == (
        "internal error (id 0123456789ab)"
    )
