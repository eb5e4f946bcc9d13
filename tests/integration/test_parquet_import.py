"""Parquet imports end to end (issue #12): a Parquet export imports back unchanged (users,
articles, comments, hypothesis-generated records too); error rows carry the row number (line
null); the format is known by name, parameter or the PAR1 magic; unusable files fail the job
naming the cause; a worker SIGKILLed mid-import leaves a job that resumes exactly once."""

from __future__ import annotations

import gzip
import io
import signal
from typing import Any

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.test_exports import (
    RECORDS,
    export,
    insert,
    parents,
    seed,
    table,
    uid,
)
from tests.support.service import Bulkio
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

RESOURCES = ("users", "articles", "comments")


def parquet(table_: pa.Table, **kw: Any) -> bytes:
    out = io.BytesIO()
    pq.write_table(table_, out, **kw)
    return out.getvalue()


def test_a_parquet_export_imports_back_unchanged(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    """Seeded tables (filters' spread of values: tags, nulls, drafts, cm_ ids): each resource
    exported as Parquet, its table emptied, the file imported: identical rows."""
    seed(db, users=2600, articles=1200, comments=3100)
    files = {r: export(service, r, "parquet").content for r in RESOURCES}
    expected = {r: table(db, r) for r in RESOURCES}
    db.execute("TRUNCATE comments, articles, users")
    for resource in RESOURCES:
        job = service.import_bytes(files[resource], f"{resource}.parquet", resource)
        assert (job["status"], job["failed"], job["warnings"]) == ("completed", 0, []), job
        assert job["processed"] == len(expected[resource])
        assert table(db, resource) == expected[resource], resource


@pytest.mark.parametrize("resource", RESOURCES)
@settings(
    max_examples=8,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_round_trip_of_generated_records_through_parquet(
    service: Bulkio, db: psycopg.Connection[Any], resource: str, data: st.DataObject
) -> None:
    rows = data.draw(RECORDS[resource].filter(bool), label="records")
    db.execute("TRUNCATE comments, articles, users")
    parents(db, resource)
    insert(db, resource, rows)
    expected = table(db, resource)
    content = export(service, resource, "parquet").content
    db.execute(f"TRUNCATE {resource} CASCADE")
    job = service.import_bytes(content, "r.parquet", resource)
    assert (job["status"], job["failed"], job["errors"]) == ("completed", 0, []), job
    assert table(db, resource) == expected


def test_errors_carry_the_row_number_and_unknown_columns_are_warned(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    n = 2500  # three batches of BULKIO_BATCH_ROWS=1000
    emails = [f"u{i}@example.com" if i % 500 != 7 else f"bad {i}" for i in range(n)]
    data = parquet(
        pa.table(
            {
                "id": [uid("p", i) for i in range(n)],
                "email": emails,
                "name": [f"U {i}" if i != 1999 else None for i in range(n)],
                "role": pa.array(["reader"] * n).dictionary_encode(),
                "active": [i % 2 == 0 for i in range(n)],
                "created_at": pa.array([1_700_000_000_000_000 + i for i in range(n)],
                                       pa.timestamp("us", "UTC")),
                "score": list(range(n)),
            }
        ),
        row_group_size=700,
    )  # fmt: skip
    job = service.import_bytes(data, "people")  # no extension, no format: the PAR1 magic
    assert job["format"] == "parquet", job
    assert (job["status"], job["processed"], job["failed"]) == ("completed", n, 6), job
    assert job["warnings"] == ["ignored unknown column(s): score"]
    errors = [(e["row"], e["line"], e["field"], e["code"]) for e in service.errors(job["job_id"])]
    assert errors == sorted(
        [(i + 1, None, "email", "invalid_format") for i in range(7, n, 500)]
        + [(2000, None, "name", "required")]
    )
    stored = db.execute("SELECT count(*), min(created_at) FROM users").fetchone()
    assert stored[0] == n - 6  # type: ignore[index]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            parquet(pa.table({"email": ["a@example.com"], "name": [1], "role": ["admin"],
                              "created_at": ["2024-01-01"]})),
            "type no field takes: name is int64",
        ),
        (parquet(pa.table({"email": ["a@example.com"]})), "lacks required column(s): name, role"),
        (gzip.compress(parquet(pa.table({"email": ["a@example.com"]}))), "gzip-compressed Parquet"),
        (parquet(pa.table({"email": ["a@example.com"] * 500}))[:-100], "incomplete"),
    ],
    ids=["wrong-type", "missing-columns", "gzipped", "truncated"],
)  # fmt: skip
def test_unusable_parquet_files_fail_the_job_naming_the_cause(
    service: Bulkio, data: bytes, message: str
) -> None:
    res = service.upload(None, "users", data=data, filename="u.data", fmt="parquet")
    assert res.status_code == 202, res.text
    job = service.wait(res.json()["job_id"])
    assert job["status"] == "failed" and message in job["error"], job


def test_sigkill_mid_parquet_import_resumes_exactly_once(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    """30,000 users in row groups of 4,096 rows (batches of 1,000 end inside them): the worker
    is killed once 3,000 rows are committed; a fresh one resumes from the checkpoint (its row
    group, rows before dropped): every row stored once, every error reported once."""
    n = 30_000
    data = parquet(
        pa.table(
            {
                "id": [uid("k", i) for i in range(n)],
                "email": [f"k{i}@example.com" if i % 997 else "nope" for i in range(n)],
                "name": [f"K {i}" for i in range(n)],
                "role": ["editor"] * n,
                "created_at": ["2024-05-01T00:00:00Z"] * n,
            }
        ),
        row_group_size=4096,
    )
    job_id = service.upload(None, "users", data=data, filename="k.parquet").json()["job_id"]

    def progressed() -> int | None:
        done = int(service.client.get(f"/v1/jobs/{job_id}").json()["processed"])
        return done if done >= 3000 else None

    wait_until(progressed, 60, 0.05, lambda: f"progress of {job_id}\n{service.logs()}")
    for worker in service.workers:
        worker.signal(signal.SIGKILL)
        worker.stop()
    at_kill = int(service.client.get(f"/v1/jobs/{job_id}").json()["processed"])
    assert 3000 <= at_kill < n, "the kill must land mid-import"
    service.workers = []
    service.start_worker()
    job = service.wait(job_id, timeout=120)
    bad = len(range(0, n, 997))
    assert (job["status"], job["processed"], job["failed"]) == ("completed", n, bad), job
    assert job["attempts"] >= 2
    total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchone()  # type: ignore[misc]
    assert total == distinct == n - bad
    rows = db.execute(
        "SELECT row_no, line_no, field, code FROM job_errors WHERE job_id = %s ORDER BY row_no",
        (job_id,),
    ).fetchall()
    assert rows == [(i + 1, None, "email", "invalid_format") for i in range(0, n, 997)]
    assert pl.read_database(f"SELECT * FROM users WHERE id = '{uid('k', 5)}'", db).height == 1
