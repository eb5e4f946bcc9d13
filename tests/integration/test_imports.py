"""Imports end to end: HTTP upload → real worker process → PostgreSQL, checked against the
exact outcome the generator planted (counts, (row, line, field, code) of every error, rows)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.datafiles import make
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

ROWS = 3000  # with BULKIO_BATCH_ROWS=1000: several batches and checkpoints per file


def report(service: Bulkio, job_id: str, fmt: str = "ndjson") -> list[dict[str, Any]]:
    res = service.error_report(job_id, fmt)
    assert res.status_code == 200, res.text
    if fmt == "ndjson":
        return [json.loads(line) for line in res.text.splitlines() if line]
    if fmt == "json":
        return json.loads(res.text)
    rows = list(csv.DictReader(io.StringIO(res.text)))
    for r in rows:
        r["row"], r["line"] = int(r["row"]), int(r["line"])
        r["field"] = r["field"] or None
    return rows


def as_tuples(errors: list[dict[str, Any]]) -> list[tuple[int, int, str | None, str]]:
    return sorted((e["row"], e["line"], e["field"], e["code"]) for e in errors)


def check_job(service: Bulkio, job: dict[str, Any], expected: Any) -> list[dict[str, Any]]:
    assert job["status"] == "completed", job
    assert job["total_records"] == expected.total_records
    assert job["processed"] == expected.total_records
    assert job["successful"] == expected.successful
    assert job["failed"] == expected.failed
    errors = report(service, job["job_id"])
    assert as_tuples(errors) == sorted(tuple(e) for e in expected.errors)
    assert all(e["message"] for e in errors)
    assert job["errors"] == errors[:20]
    return errors


def table_ids(db: psycopg.Connection[Any], table: str) -> list[str]:
    return sorted(str(r[0]) for r in db.execute(f"SELECT id FROM {table}"))


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json"])
def test_every_resource_and_format_gives_the_planted_outcome(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path, fmt: str
) -> None:
    for resource in ("users", "articles", "comments"):
        path, expected = make(datadir, resource, fmt, ROWS, gzip=(resource == "comments"))
        job = service.import_file(path, resource)
        check_job(service, job, expected)
        assert job["inserted_records"] == expected.successful
        assert table_ids(db, resource) == sorted(expected.valid_id_list())


def test_users_10k_csv_report_in_all_three_formats(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 10_000)
    job = service.import_file(path, "users")
    errors = check_job(service, job, expected)
    assert job["progress"]["percent"] == 100.0
    assert job["rows_per_sec"] > 0 and job["duration_ms"] >= 0
    for fmt in ("json", "csv"):
        other = report(service, job["job_id"], fmt)
        assert as_tuples(other) == as_tuples(errors)
        assert [e["message"] for e in other] == [e["message"] for e in errors]
    res = service.error_report(job["job_id"], "csv")
    assert res.headers["content-type"].startswith("text/csv")
    assert "attachment" in res.headers["content-disposition"]


def test_reimport_updates_instead_of_inserting(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    path, expected = make(datadir, "users", "ndjson", ROWS)
    first = service.import_file(path, "users")
    db.execute("UPDATE users SET name = 'changed'")
    again = service.import_file(path, "users")
    check_job(service, again, expected)
    assert (first["inserted_records"], first["updated_records"]) == (expected.successful, 0)
    assert (again["inserted_records"], again["updated_records"]) == (0, expected.successful)
    assert db.execute("SELECT count(*) FROM users WHERE name = 'changed'").fetchone() == (0,)
    assert table_ids(db, "users") == sorted(expected.valid_id_list())


def test_insert_mode_rejects_existing_keys(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 1000)
    service.import_file(path, "users")
    again = service.import_file(path, "users", mode="insert")
    assert again["status"] == "completed"
    assert again["successful"] == 0
    assert again["failed"] == expected.total_records
    codes = {(e["field"], e["code"]) for e in report(service, again["job_id"])}
    assert ("id", "conflict") in codes
    assert db.execute("SELECT count(*) FROM users").fetchone() == (expected.successful,)


def test_validate_only_reports_everything_and_writes_nothing(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", ROWS)
    job = service.import_file(path, "users", mode="validate_only")
    check_job(service, job, expected)
    assert job["inserted_records"] == expected.successful
    assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_natural_key_updates_and_conflicts(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    a, b = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    c = "33333333-3333-4333-8333-333333333333"
    first = (
        f"id,email,name,role,created_at\n{a},ann@example.com,Ann,admin,2024-01-01T00:00:00Z\n"
        f"{b},bob@example.com,Bob,viewer,2024-01-01T00:00:00Z\n"
        f"{c},carl@example.com,Carl,viewer,2024-01-01T00:00:00Z\n"
    ).encode()
    service.wait(service.upload(None, "users", data=first, filename="u.csv").json()["job_id"])
    second = (
        "id,email,name,role,created_at\n"
        ",ANN@example.com,Ann by email,editor,2024-01-01T00:00:00Z\n"
        f"{b},Carl@example.com,Bob steals,viewer,2024-01-01T00:00:00Z\n"
        ",nobody@example.com,Nobody,viewer,2024-01-01T00:00:00Z\n"
    ).encode()
    job = service.wait(
        service.upload(None, "users", data=second, filename="u.csv").json()["job_id"]
    )
    assert (job["successful"], job["failed"], job["updated_records"]) == (1, 2, 1)
    assert as_tuples(job["errors"]) == [(2, 3, "email", "conflict"), (3, 4, "id", "required")]
    assert db.execute("SELECT name, role FROM users WHERE id = %s", (a,)).fetchone() == (
        "Ann by email",
        "editor",
    )


def test_unreadable_files_fail_the_job_with_a_precise_message(service: Bulkio) -> None:
    cases = [
        ("users", "u.csv", b"email,name\nx@y.z,X\n", "lacks required column(s): role, created_at"),
        ("users", "u.json", b'{"id": 1}', "must hold one array of objects"),
        ("users", "u.csv", b"id,email,name,role,created_at\n\xff\xfe,a,b,c,d\n", "not valid UTF-8"),
        ("users", "u.csv.gz", b"\x1f\x8b\x08\x00garbage", "cannot be decompressed"),
    ]
    for resource, name, data, message in cases:
        res = service.upload(None, resource, data=data, filename=name)
        assert res.status_code == 202, res.text
        job = service.wait(res.json()["job_id"])
        assert job["status"] == "failed", job
        assert message in job["error"], job["error"]


@pytest.mark.parametrize(
    ("form", "status", "detail"),
    [
        ({"resource": "widgets"}, 400, "resource must be one of"),
        ({"resource": "users", "mode": "replace"}, 400, "mode must be one of"),
        ({"resource": "users", "format": "xml"}, 400, "format must be one of"),
    ],
)
def test_bad_requests_are_problem_json(
    service: Bulkio, form: dict[str, str], status: int, detail: str
) -> None:
    res = service.client.post("/v1/imports", data=form, files={"file": ("a.csv", b"id\n1\n")})
    assert res.status_code == status
    assert res.headers["content-type"].startswith("application/problem+json")
    assert detail in res.json()["detail"]


def test_missing_file_and_unknown_job(service: Bulkio) -> None:
    res = service.client.post(
        "/v1/imports", data={"resource": "users"}, files={"other": ("a.csv", b"x")}
    )
    assert res.status_code == 400 and "'file'" in res.json()["detail"]
    assert service.client.get("/v1/imports/00000000-0000-4000-8000-000000000000").status_code == 404
    assert service.client.get("/v1/jobs/not-a-uuid").status_code == 404


def test_idempotency_key(service: Bulkio, db: psycopg.Connection[Any], datadir: Path) -> None:
    path, expected = make(datadir, "users", "csv", 1000)
    first = service.upload(path, "users", key="k-1")
    again = service.upload(path, "users", key="k-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert first.headers["idempotent-replayed"] == "false"
    different = service.upload(None, "users", key="k-1", data=b"id,email\n", filename="x.csv")
    assert different.status_code == 422
    db.execute("INSERT INTO idempotency_keys (owner, key) VALUES ('tester', 'k-busy')")
    busy = service.upload(path, "users", key="k-busy")
    assert busy.status_code == 409
    service.wait(first.json()["job_id"])
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM users").fetchone() == (expected.successful,)


def test_clean_batches_take_the_fast_paths_with_the_same_outcome(
    service: Bulkio, db: psycopg.Connection[Any], datadir: Path
) -> None:
    """Clean batches are loaded optimistically (plain INSERT, then ON CONFLICT upsert); a key
    that only PostgreSQL can see is repeated must still be caught by the full classification."""
    path, _ = make(datadir, "users", "csv", 2500, seed=9, defect_rate=0.0)
    lines = path.read_bytes().splitlines(keepends=True)
    first_id = lines[1].split(b",")[0]
    repeat = first_id + b",someone-new@example.com,Again,viewer,true,2024-01-01T00:00:00Z,\n"
    data = b"".join(lines) + repeat
    job = service.wait(service.upload(None, "users", data=data, filename="u.csv").json()["job_id"])
    assert (job["processed"], job["successful"], job["failed"]) == (2501, 2500, 1)
    assert as_tuples(job["errors"]) == [(2501, len(lines) + 1, "id", "duplicate_in_file")]
    again = service.wait(
        service.upload(None, "users", data=data, filename="u.csv").json()["job_id"]
    )
    assert (again["inserted_records"], again["updated_records"], again["failed"]) == (0, 2500, 1)
    total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchone()
    assert total == distinct == 2500
