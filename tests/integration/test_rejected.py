"""``GET /v1/imports/{id}/rejected`` (issue #12): the failed records in the upload's own format,
copied from the stored file with their errors; fixed, the file imports as it is. CSV (quoted
newlines, CRLF, ragged records), NDJSON (a line that is no object), JSON arrays and Parquet;
compressed uploads; owner isolation; 409 while the job runs and when its error rows were
truncated."""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.service import Bulkio, make_token

pytestmark = pytest.mark.integration

N = 2600  # three batches of BULKIO_BATCH_ROWS=1000
BAD = {5: "email", 999: "role", 1000: "name", 1001: "email", 2600: "both"}


def uid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulkio-rejected/{i}"))


def user(i: int) -> dict[str, Any]:
    """User ``i``, with the defect ``BAD[i]`` if it has one."""
    kind = BAD.get(i)
    return {
        "id": uid(i),
        "email": "not an email" if kind in ("email", "both") else f"r{i}@example.com",
        "name": None if kind == "name" else f'User "{i}"\nsecond line',
        "role": "boss" if kind in ("role", "both") else "editor",
        "created_at": "2024-02-03T04:05:06Z",
    }


def fixed(record: dict[str, Any]) -> dict[str, Any]:
    """What a user does with a rejected record: correct the values (``_errors`` stays)."""
    i = next(i for i in range(1, N + 1) if uid(i) == record["id"])
    good = {**user(i), "email": f"r{i}@example.com", "role": "editor", "name": f"Fixed {i}"}
    return {**record, **{k: good[k] for k in ("email", "role", "name")}}


def users_csv() -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, ["id", "email", "name", "role", "created_at"], lineterminator="\r\n"
    )
    writer.writeheader()
    for i in range(1, N + 1):
        row = user(i)
        writer.writerow({**row, "name": row["name"] or ""})
    return out.getvalue().encode()


def rejected(service: Bulkio, job_id: str, client: httpx.Client | None = None) -> httpx.Response:
    return (client or service.client).get(f"/v1/imports/{job_id}/rejected")


def failed_ids() -> list[str]:
    return [uid(i) for i in sorted(BAD)]


def check_reimport(
    service: Bulkio, db: psycopg.Connection[Any], data: bytes, name: str, stored: int = N
) -> None:
    job = service.import_bytes(data, name)
    assert (job["status"], job["processed"], job["failed"]) == ("completed", len(BAD), 0), job
    assert job["warnings"] == []  # _errors is ignored without a word
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == stored  # type: ignore[index]


def test_csv_rejected_records_are_the_original_bytes_plus_errors_and_import_once_fixed(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    data = users_csv()
    job = service.import_bytes(data, "users.csv")
    assert (job["status"], job["failed"]) == ("completed", len(BAD)), job
    res = rejected(service, job["job_id"])
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/csv")
    assert res.headers["content-disposition"] == (
        f'attachment; filename="rejected-{job["job_id"]}.csv"'
    )
    assert res.headers["bulkio-rejected-records"] == str(len(BAD))
    lines = res.content.split(b"\r\n")
    assert lines[0] == b"id,email,name,role,created_at,_errors"
    records = list(csv.DictReader(io.StringIO(res.content.decode(), newline="")))
    assert [r["id"] for r in records] == failed_ids()
    # Each record is the original's bytes (quoted newline included), then its errors.
    originals = data.split(b"\r\n")  # the names' newlines are LF only: one item per record
    for i in BAD:
        assert res.content.count(b"\r\n" + originals[i] + b',"') == 1, i
    assert b'User ""5""\nsecond line' in originals[5]
    assert records[0]["_errors"] == "email: invalid_format: email is not a valid email address"
    assert records[-1]["_errors"] == (
        "email: invalid_format: email is not a valid email address; "
        "role: invalid_value: role must be one of: admin, author, editor, reader, viewer"
    )
    assert records[2]["_errors"] == "name: required: name is required"
    out = io.StringIO()
    writer = csv.DictWriter(out, list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(fixed(r) for r in records)
    check_reimport(service, db, out.getvalue().encode(), "fixed.csv")


def test_a_ragged_csv_record_is_padded_so_errors_stay_in_their_column(
    service: Bulkio,
) -> None:
    data = b"id,email,name,role,created_at\n" + f"{uid(1)},a@example.com\n".encode()
    data += f"{uid(2)},b@example.com,B,reader,2024-01-01\n".encode()
    job = service.import_bytes(data, "u.csv")
    res = rejected(service, job["job_id"])
    expected = (
        "id,email,name,role,created_at,_errors\n"
        f'{uid(1)},a@example.com,,,,"malformed_record: expected 5 fields '
        "(the header's), found 2\"\n"
    )
    assert res.content.decode() == expected


def zstd(data: bytes) -> bytes:
    return pa.Codec("zstd").compress(data, asbytes=True)


@pytest.mark.parametrize("compress", [gzip.compress, zstd], ids=["gzip", "zstd"])
def test_ndjson_lines_get_an_errors_member_and_import_once_fixed(
    service: Bulkio, db: psycopg.Connection[Any], compress: Any
) -> None:
    lines = [json.dumps(user(i)) for i in range(1, N + 1)]
    lines[9] = "[1, 2]"  # row 10: not an object
    data = compress(("\n".join(lines) + "\n").encode())
    job = service.import_bytes(data, "users.ndjson")
    assert job["failed"] == len(BAD) + 1, job
    res = rejected(service, job["job_id"])
    assert res.status_code == 200 and res.headers["content-type"] == "application/x-ndjson"
    out = [json.loads(line) for line in res.content.splitlines()]
    assert out[1] == {
        "_errors": [
            {
                "field": None,
                "code": "malformed_record",
                "message": "the line holds an array, not a JSON object",
            }
        ],
        "_record": "[1, 2]",
    }
    del out[1]
    assert [r["id"] for r in out] == failed_ids()
    assert out[0]["_errors"] == [
        {
            "field": "email",
            "code": "invalid_format",
            "message": "email is not a valid email address",
        }
    ]
    first = res.content.splitlines()[0]
    assert first == lines[4][:-1].encode() + b',"_errors":' + json.dumps(
        out[0]["_errors"], separators=(",", ":")
    ).encode() + b"}"  # fmt: skip
    fixed_lines = [json.dumps(fixed(r)) for r in out]
    data = ("\n".join(fixed_lines) + "\n").encode()
    check_reimport(service, db, data, "fixed.ndjson", N - 1)  # row 10 held no user at all


def test_json_array_elements_become_one_array(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    data = ("[\n  " + ",\n  ".join(json.dumps(user(i)) for i in range(1, N + 1)) + "\n]\n").encode()
    job = service.import_bytes(data, "users.json")
    res = rejected(service, job["job_id"])
    assert res.headers["content-type"] == "application/json"
    out = res.json()
    assert [r["id"] for r in out] == failed_ids()
    assert all(r["_errors"] for r in out)
    check_reimport(service, db, json.dumps([fixed(r) for r in out]).encode(), "fixed.json")


def test_parquet_rejected_rows_keep_their_columns_and_types(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    users = [user(i) for i in range(1, N + 1)]
    table = pa.Table.from_pylist(users).append_column("score", pa.array(range(N)))
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=700)
    job = service.import_bytes(buf.getvalue(), "users.parquet")
    assert job["failed"] == len(BAD), job
    res = rejected(service, job["job_id"])
    assert res.headers["content-type"] == "application/vnd.apache.parquet"
    out = pq.read_table(io.BytesIO(res.content), use_threads=False)
    assert out.column_names == [*table.column_names, "_errors"]
    assert out.schema.field("score").type == pa.int64()
    rows = out.to_pylist()
    assert [r["id"] for r in rows] == failed_ids()
    assert [r["score"] for r in rows] == [i - 1 for i in sorted(BAD)]
    assert rows[2]["_errors"] == [
        {"field": "name", "code": "required", "message": "name is required"}
    ]
    again = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([fixed(r) for r in rows], schema=out.schema), again)
    job = service.import_bytes(again.getvalue(), "fixed.parquet")
    assert (job["status"], job["failed"]) == ("completed", 0), job
    assert job["warnings"] == ["ignored unknown column(s): score"]
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == N  # type: ignore[index]


def test_a_clean_import_has_an_empty_rejected_file(service: Bulkio) -> None:
    data = (
        b"id,email,name,role,created_at\n"
        + f"{uid(1)},a@example.com,A,reader,2024-01-01\n".encode()
    )
    job = service.import_bytes(data, "u.csv")
    res = rejected(service, job["job_id"])
    assert res.status_code == 200 and res.content == b"id,email,name,role,created_at,_errors\n"
    assert res.headers["bulkio-rejected-records"] == "0"


def test_other_owners_get_404(service: Bulkio) -> None:
    job = service.import_bytes(users_csv(), "users.csv")
    alice = service.client_for(
        make_token(service.env["BULKIO_DATABASE_URL"], "alice", ["imports:read"])
    )
    res = rejected(service, job["job_id"], alice)
    assert res.status_code == 404 and res.headers["content-type"].startswith("application/problem")
    assert rejected(service, str(uuid.uuid4())).status_code == 404


def test_409_while_the_job_has_not_ended(service: Bulkio) -> None:
    for worker in service.workers:
        worker.stop()
    service.workers.clear()
    res = service.upload(None, "users", data=users_csv(), filename="users.csv")
    job_id = res.json()["job_id"]
    early = rejected(service, job_id)
    assert early.status_code == 409 and "queued" in early.json()["detail"], early.text
    service.start_worker()
    service.wait(job_id)
    assert rejected(service, job_id).status_code == 200


@pytest.fixture
def capped(service: Bulkio) -> Iterator[Bulkio]:
    """One worker storing at most 3 error rows per job; the next test gets a default one."""
    for worker in service.workers:
        worker.stop()
    service.workers.clear()
    default = service.env
    service.env = {**default, "BULKIO_MAX_ERROR_ROWS": "3"}
    try:
        service.start_worker()
    finally:
        service.env = default
    yield service
    for worker in service.workers:
        worker.stop()
    service.workers.clear()


def test_409_when_the_error_rows_were_truncated(capped: Bulkio) -> None:
    job = capped.import_bytes(users_csv(), "users.csv")
    assert job["errors_truncated"] and job["stored_errors"] == 3, job
    res = rejected(capped, job["job_id"])
    assert res.status_code == 409
    assert "only the first 3 of its 6 error rows (BULKIO_MAX_ERROR_ROWS)" in res.json()["detail"]


def test_an_import_without_a_stored_file_is_409(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    job = service.import_bytes(users_csv(), "users.csv")
    db.execute("UPDATE jobs SET object_key = NULL WHERE id = %s", (job["job_id"],))
    res = rejected(service, job["job_id"])
    assert res.status_code == 409 and "no stored file" in res.json()["detail"], res.text
