"""Bounds on a job's errors (issue #8): a request's ``max_errors`` stops the job at the batch
boundary where it is passed, and ``BULKIO_MAX_ERROR_ROWS`` caps the error rows stored per job
(counted beyond it, never stored), exactly, across batches, fast-path retries and worker deaths.

The files are written here with their defects planted at known rows, so the exact report
(row, line, field, code) is known without running anything."""

from __future__ import annotations

import csv
import io
import json
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.service import Bulkio
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

HEADER = "id,email,name,role,created_at\n"
#: Defects by kind: each yields these (field, code) error rows for its record.
DEFECTS: dict[str, list[tuple[str | None, str]]] = {
    "email": [("email", "invalid_format")],
    "both": [("email", "invalid_format"), ("role", "invalid_value")],
    "malformed": [(None, "malformed_record")],
    "dup": [("id", "duplicate_in_file")],  # decided in PostgreSQL, not by the validator
}
CAP = 700

Error = tuple[int, int, str | None, str]


def _uid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulkio-error-caps/{i}"))


def users_csv(n: int, defect_of: dict[int, str]) -> tuple[bytes, list[Error], int]:
    """(file, its error rows in report order, valid records) for ``n`` users whose record ``i``
    has the defect ``defect_of[i]``; a ``dup`` repeats the id of record i-1 (which must be
    valid)."""
    out = io.StringIO()
    out.write(HEADER)
    errors: list[Error] = []
    for i in range(1, n + 1):
        kind = defect_of.get(i)
        uid, email, role = _uid(i), f"u{i}@example.com", "reader"
        if kind == "email":
            email = "not-an-email"
        elif kind == "both":
            email, role = "not-an-email", "boss"
        elif kind == "dup":
            assert defect_of.get(i - 1) is None
            uid = _uid(i - 1)
        if kind == "malformed":
            out.write(f"{uid},{email}\n")
        else:
            out.write(f"{uid},{email},User {i},{role},2024-01-01T00:00:00Z\n")
        errors += [(i, i + 1, field, code) for field, code in DEFECTS.get(kind or "", [])]
    return out.getvalue().encode(), errors, n - len({i for i in defect_of if i <= n})


def every(step: int, n: int, kinds: tuple[str, ...], offset: int = 0) -> dict[int, str]:
    """A defect on every ``step``-th record from ``offset``, cycling through ``kinds``."""
    return {i: kinds[k % len(kinds)] for k, i in enumerate(range(step + offset, n + 1, step))}


def _post(service: Bulkio, data: bytes, key: str | None = None, **form: Any) -> Any:
    return service.client.post(
        "/v1/imports",
        data={"resource": "users", **form},
        files={"file": ("users.csv", data)},
        headers={"Idempotency-Key": key} if key else {},
    )


def _run(service: Bulkio, data: bytes, **form: Any) -> dict[str, Any]:
    res = _post(service, data, **form)
    assert res.status_code == 202, res.text
    return service.wait(res.json()["job_id"])


def _count(db: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = db.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def report(service: Bulkio, job_id: str, fmt: str) -> tuple[list[dict[str, Any]], str]:
    """(the report's records, its Bulkio-Errors-Truncated header)."""
    res = service.error_report(job_id, fmt)
    assert res.status_code == 200, res.text
    if fmt == "ndjson":
        rows = [json.loads(line) for line in res.text.splitlines() if line]
    elif fmt == "json":
        rows = json.loads(res.text)
    else:
        rows = list(csv.DictReader(io.StringIO(res.text)))
        for r in rows:
            for name in ("row", "line"):
                r[name] = int(r[name]) if r[name] else None
            for name in ("field", "value"):
                r[name] = r[name] or None
    return rows, res.headers["Bulkio-Errors-Truncated"]


def as_tuples(rows: list[dict[str, Any]]) -> list[Error]:
    return [(r["row"], r["line"], r["field"], r["code"]) for r in rows]


# ---------------------------------------------------------------- max_errors per request


def test_max_errors_stops_the_job_at_the_batch_boundary_where_it_is_passed(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    # 100 failed records per 1,000-record batch (BULKIO_BATCH_ROWS=1000 in the tests)
    data, errors, _ = users_csv(5000, every(10, 5000, ("email", "both", "malformed", "dup")))
    job = _run(service, data, max_errors="250")
    assert job["status"] == "failed", job
    assert job["error"] == "stopped after 300 failed records: more than max_errors=250"
    assert job["options"] == {"max_errors": 250}
    # batches 1-3 committed (300 failed > 250 at the end of batch 3), batches 4-5 never read
    assert (job["processed"], job["failed"], job["successful"]) == (3000, 300, 2700)
    assert job["total_records"] == 3000
    assert _count(db, "SELECT count(*) FROM users") == 2700
    assert _count(db, "SELECT max(substr(name, 6)::int) FROM users") == 3000 - 1  # row 3000 bad
    rows, truncated = report(service, job["job_id"], "ndjson")
    assert as_tuples(rows) == [e for e in errors if e[0] <= 3000]
    assert truncated == "false" and job["errors_truncated"] is False


def test_max_errors_zero_fails_at_the_first_failed_record_and_passes_a_clean_file(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    clean, _, _ = users_csv(1500, {})
    job = _run(service, clean, max_errors="0")
    assert (job["status"], job["successful"], job["error"]) == ("completed", 1500, None)

    db.execute("TRUNCATE users CASCADE")
    one_bad, _, _ = users_csv(1500, {500: "email"})
    job = _run(service, one_bad, max_errors="0")
    assert job["status"] == "failed"
    assert job["error"] == "stopped after 1 failed records: more than max_errors=0"
    assert (job["processed"], job["failed"], job["successful"]) == (1000, 1, 999)
    assert _count(db, "SELECT count(*) FROM users") == 999


def test_max_errors_as_a_query_parameter_of_a_raw_upload(service: Bulkio) -> None:
    data, _, _ = users_csv(2500, every(100, 2500, ("email",)))  # 10 failed per batch
    res = service.client.post(
        "/v1/imports",
        params={"resource": "users", "format": "csv", "max_errors": "15"},
        content=data,
        headers={"Content-Type": "text/csv"},
    )
    assert res.status_code == 202, res.text
    job = service.wait(res.json()["job_id"])
    assert job["status"] == "failed" and (job["processed"], job["failed"]) == (2000, 20), job
    assert job["error"] == "stopped after 20 failed records: more than max_errors=15"


def test_a_job_resumed_past_its_max_errors_fails_without_reading_on(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    """The worker that committed the batch passing max_errors died before failing the job: the
    next claim fails it at once instead of reading further batches."""
    for w in service.workers:
        w.stop()
    service.workers.clear()
    data, _, _ = users_csv(2000, {})
    res = _post(service, data, max_errors="3")
    assert res.status_code == 202, res.text
    job_id = res.json()["job_id"]
    # as if an earlier attempt had committed a batch with 4 failed records, then died
    db.execute("UPDATE jobs SET failed = 4, processed = 1000 WHERE id = %s", (job_id,))
    service.start_worker()
    job = service.wait(job_id)
    assert job["status"] == "failed", job
    assert job["error"] == "stopped after 4 failed records: more than max_errors=3"
    assert job["processed"] == 1000
    assert _count(db, "SELECT count(*) FROM users") == 0


@pytest.mark.parametrize(
    "value", ["-1", "abc", "1.5", "", " ", "1e3", "99999999999999999999", "+5", "0x10", "٣"]
)
def test_max_errors_must_be_a_whole_number_not_below_zero(service: Bulkio, value: str) -> None:
    data, _, _ = users_csv(10, {})
    res = _post(service, data, max_errors=value)
    if value.strip() == "":
        # an empty form field means "not given", like format and mode
        assert res.status_code == 202, res.text
        return
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert "max_errors must be a whole number" in res.json()["detail"], res.json()
    assert _count_jobs(service) == 0


def _count_jobs(service: Bulkio) -> int:
    with psycopg.connect(service.env["BULKIO_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM jobs").fetchone()
        return int(row[0]) if row else 0


def test_max_errors_is_part_of_the_idempotency_request(service: Bulkio) -> None:
    data, _, _ = users_csv(50, {})
    first = _post(service, data, max_errors="10", key="cap-key")
    assert first.status_code == 202, first.text
    same = _post(service, data, max_errors="10", key="cap-key")
    assert same.status_code == 202 and same.headers["Idempotent-Replayed"] == "true"
    assert same.json()["job_id"] == first.json()["job_id"]
    for other in ({"max_errors": "11"}, {}):
        res = _post(service, data, key="cap-key", **other)
        assert res.status_code == 422, (other, res.text)
    # without max_errors the hash is what it was before the field existed
    plain = _post(service, data, key="plain-key")
    assert _post(service, data, key="plain-key").json()["job_id"] == plain.json()["job_id"]
    assert _post(service, data, key="plain-key", max_errors="5").status_code == 422


def test_openapi_documents_max_errors(service: Bulkio) -> None:
    doc = service.client.get("/schema/openapi.json").json()
    form = doc["paths"]["/v1/imports"]["post"]["requestBody"]["content"]["multipart/form-data"]
    prop = form["schema"]["properties"]["max_errors"]
    assert prop["type"] == "integer" and prop["minimum"] == 0, prop
    assert "batch" in prop["description"]
    view = doc["components"]["schemas"]["JobView"]["properties"]
    assert {"errors_truncated", "stored_errors"} <= set(view)


# ---------------------------------------------------------------- BULKIO_MAX_ERROR_ROWS


@pytest.fixture
def capped(service: Bulkio) -> Iterator[Bulkio]:
    """The service with one worker that stores at most CAP error rows per job (the API needs no
    setting: the job row says how many were stored). The next test gets a default worker."""
    _replace_workers(service)
    yield service
    for w in service.workers:
        w.stop()
    service.workers.clear()


def _replace_workers(service: Bulkio) -> None:
    for w in service.workers:
        w.stop()
    service.workers.clear()
    default = service.env
    service.env = {**default, "BULKIO_MAX_ERROR_ROWS": str(CAP)}
    try:
        service.start_worker()
    finally:
        service.env = default


def _stored(db: psycopg.Connection[Any], job_id: str) -> list[Error]:
    return [
        (int(r[0]), int(r[1]), r[2], r[3])
        for r in db.execute(
            "SELECT row_no, line_no, field, code FROM job_errors WHERE job_id = %s "
            "ORDER BY row_no, field NULLS FIRST",
            (job_id,),
        )
    ]


def test_error_rows_beyond_the_cap_are_counted_but_not_stored(
    capped: Bulkio, db: psycopg.Connection[Any]
) -> None:
    service = capped
    # ~415 error rows per batch from the validator and from PostgreSQL (duplicates), mixed
    # within each batch: the cap is passed in the middle of batch 2, by row order
    defects = every(3, 4000, ("email", "both", "malformed", "dup"))
    # batch 1 has no duplicates, so it is clean: with the existing user below, the fast paths
    # are tried, miss, roll back (its error rows with them) and the batch is retried
    defects.update({i: "email" for i, kind in defects.items() if i <= 1000 and kind == "dup"})
    data, errors, valid = users_csv(4000, defects)
    db.execute(
        "INSERT INTO users (id, email, name, role, created_at) "
        "VALUES (%s, 'u1@example.com', 'old', 'reader', now())",
        (_uid(1),),
    )
    job = _run(service, data)
    assert job["status"] == "completed", job
    failed = len({e[0] for e in errors})
    assert (job["processed"], job["failed"], job["successful"]) == (4000, failed, valid)
    assert job["error_count"] == len(errors) > 2 * CAP
    assert (job["stored_errors"], job["errors_truncated"]) == (CAP, True)
    assert _count(db, "SELECT count(*) FROM users") == valid
    # exactly the first CAP error rows in report order: a prefix of the full report
    assert _stored(db, job["job_id"]) == errors[:CAP]
    assert as_tuples(job["errors"]) == errors[:20]

    for fmt in ("ndjson", "json", "csv"):
        rows, truncated = report(service, job["job_id"], fmt)
        assert truncated == "true", fmt
        assert as_tuples(rows[:-1]) == errors[:CAP], fmt
        marker = rows[-1]
        assert marker["code"] == "errors_truncated", (fmt, marker)
        assert (marker["row"], marker["line"], marker["field"], marker["value"]) == (None,) * 4
        assert f"first {CAP} of {len(errors)} error rows" in marker["message"], marker


def test_a_report_under_the_cap_is_complete_and_says_so(
    capped: Bulkio, db: psycopg.Connection[Any]
) -> None:
    data, errors, _ = users_csv(3000, every(10, 3000, ("email", "both")))
    assert len(errors) < CAP
    job = _run(capped, data)
    assert (job["stored_errors"], job["errors_truncated"]) == (len(errors), False)
    for fmt in ("ndjson", "json", "csv"):
        rows, truncated = report(capped, job["job_id"], fmt)
        assert truncated == "false" and as_tuples(rows) == errors, fmt


def test_the_cap_holds_exactly_when_the_worker_dies_mid_import(
    capped: Bulkio, db: psycopg.Connection[Any]
) -> None:
    """SIGKILL while batches commit: the resumed job's stored rows are still exactly the first
    CAP (the counter and the rows commit together, in each batch's transaction)."""
    service = capped
    n = 30_000
    # ~190 error rows per batch: the cap is passed in batch 4, about when the kill lands
    defects = every(7, n, ("email", "both", "dup"), offset=1)
    data, errors, valid = users_csv(n, defects)
    job_id = _post(service, data).json()["job_id"]
    wait_until(
        lambda: int(service.client.get(f"/v1/jobs/{job_id}").json()["processed"]) >= 3000,
        60,
        message=lambda: f"3,000 records processed\n{service.logs()}",
    )
    for w in service.workers:
        w.signal(signal.SIGKILL)
        w.stop()
    at_kill = int(service.client.get(f"/v1/jobs/{job_id}").json()["processed"])
    assert at_kill < n, "the kill must land mid-import"
    _replace_workers(service)
    job = service.wait(job_id)
    assert job["status"] == "completed", job
    assert job["attempts"] >= 2
    assert (job["failed"], job["successful"], job["error_count"]) == (
        len({e[0] for e in errors}),
        valid,
        len(errors),
    )
    assert (job["stored_errors"], job["errors_truncated"]) == (CAP, True)
    assert _stored(db, job_id) == errors[:CAP]
