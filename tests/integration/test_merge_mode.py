"""``mode=merge`` (issue #12): a record updates only the fields it holds, on tables that hold rows.

CSV: the fields the header names; NDJSON and JSON: each record's keys (``null`` included). Required
fields are required only of records that create a row. ``upsert`` still replaces every field and
``validate_only`` is unchanged.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

T0 = dt.datetime(2021, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
T1 = dt.datetime(2022, 6, 7, 8, 9, 10, tzinfo=dt.UTC)
USERS = 2500  # with BULKIO_BATCH_ROWS=1000: three batches


def uid(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}-{n}"))


def seed_users(db: psycopg.Connection[Any], n: int = USERS) -> None:
    """Users 0..n-1: name N<i>, role editor, inactive, created T0, updated T1."""
    with (
        db.cursor() as cur,
        cur.copy(
            "COPY users (id, email, name, role, active, created_at, updated_at) FROM STDIN"
        ) as copy,
    ):
        for i in range(n):
            copy.write_row((uid("user", i), f"u{i}@example.com", f"N{i}", "editor", False, T0, T1))


def users(db: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    rows = db.execute(
        "SELECT id::text, email, name, role, active, created_at, updated_at FROM users"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def start(service: Bulkio, data: bytes, name: str, resource: str = "users", **form: str) -> Any:
    res = service.client.post(
        "/v1/imports", data={"resource": resource, **form}, files={"file": (name, data)}
    )
    assert res.status_code == 202, res.text
    return service.wait(res.json()["job_id"])


def errors(service: Bulkio, job_id: str) -> list[tuple[int, str | None, str]]:
    res = service.error_report(job_id)
    assert res.status_code == 200, res.text
    rows = [json.loads(line) for line in res.text.splitlines()]
    return [(e["row"], e["field"], e["code"]) for e in rows]


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_csv_with_id_and_name_updates_names_and_keeps_the_rest(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_users(db)
    before = users(db)
    body = "id,name\n" + "".join(f"{uid('user', i)},New {i}\n" for i in range(USERS))
    job = start(service, body.encode(), "names.csv", mode="merge")
    assert job["status"] == "completed", job
    assert (job["successful"], job["failed"]) == (USERS, 0), errors(service, job["job_id"])[:5]
    assert (job["inserted_records"], job["updated_records"]) == (0, USERS)
    after = users(db)
    assert after.keys() == before.keys()
    for key, (email, name, role, active, created_at, updated_at) in after.items():
        i = int(before[key][1][1:])
        assert name == f"New {i}"
        assert (email, role, active, created_at, updated_at) == (
            f"u{i}@example.com", "editor", False, T0, T1,
        )  # fmt: skip


def test_a_new_record_without_required_fields_is_required_per_missing_field(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_users(db, 3)
    body = (
        "id,name,role\n"
        f"{uid('user', 0)},Zero,admin\n"  # exists: may omit email and created_at
        f"{uid('user', 99)},New,admin\n"  # new: lacks email and created_at
        f"{uid('user', 1)},,admin\n"  # exists, but a required field given empty
    )
    job = start(service, body.encode(), "partial.csv", mode="merge")
    assert job["status"] == "completed", job
    assert (job["successful"], job["failed"]) == (1, 2)
    assert (job["inserted_records"], job["updated_records"]) == (0, 1)
    assert errors(service, job["job_id"]) == [
        (2, "created_at", "required"),
        (2, "email", "required"),
        (3, "name", "required"),
    ]
    report = service.error_report(job["job_id"]).text
    assert "email is required to create a new user" in report
    assert users(db)[uid("user", 0)][1:3] == ("Zero", "admin")
    assert uid("user", 99) not in users(db)


def test_a_new_record_with_every_required_field_is_inserted_with_defaults(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_users(db, 1)
    body = (
        "id,email,name,role,created_at\n"
        f"{uid('user', 0)},u0@example.com,Zero,admin,2023-01-01T00:00:00Z\n"
        f"{uid('user', 5)},five@example.com,Five,viewer,2023-01-01T00:00:00Z\n"
    )
    job = start(service, body.encode(), "two.csv", mode="merge")
    assert (job["inserted_records"], job["updated_records"], job["failed"]) == (1, 1, 0), job
    got = users(db)
    # the existing row keeps the fields the header lacks; the new one gets their defaults
    assert got[uid("user", 0)][3:] == (False, dt.datetime(2023, 1, 1, tzinfo=dt.UTC), T1)
    assert got[uid("user", 5)][1:] == (
        "Five", "viewer", True, dt.datetime(2023, 1, 1, tzinfo=dt.UTC), None,
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_json_presence_is_per_record(
    service: Bulkio, db: psycopg.Connection[Any], fmt: str
) -> None:
    seed_users(db, 5)
    records = [
        {"id": uid("user", 0), "name": "Only name"},
        {"id": uid("user", 1), "updated_at": None},  # null: set to null
        {"id": uid("user", 2), "role": "admin", "active": True},
        {"email": "U3@example.com", "name": "By email"},  # matched by its natural key
        {"id": uid("user", 4), "meta": {"name": "nested, not a field"}},  # nothing to change
    ]
    data = ndjson(records) if fmt == "ndjson" else json.dumps(records).encode()
    job = start(service, data, f"merge.{fmt}", mode="merge")
    assert job["status"] == "completed", job
    assert (job["updated_records"], job["failed"]) == (5, 0), errors(service, job["job_id"])
    got = users(db)
    base = ("editor", False, T0, T1)
    assert got[uid("user", 0)][1:] == ("Only name", *base)
    assert got[uid("user", 1)][1:] == ("N1", "editor", False, T0, None)
    assert got[uid("user", 2)][1:] == ("N2", "admin", True, T0, T1)
    assert got[uid("user", 3)][:2] == ("U3@example.com", "By email")  # it holds email: written
    assert got[uid("user", 3)][2:] == base
    assert got[uid("user", 4)][1:] == ("N4", *base)


def test_json_null_for_a_required_field_is_required(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_users(db, 1)
    data = ndjson([{"id": uid("user", 0), "name": None}, {"id": uid("user", 7), "name": "N"}])
    job = start(service, data, "nulls.ndjson", mode="merge")
    assert errors(service, job["job_id"]) == [
        (1, "name", "required"),
        (2, "created_at", "required"),
        (2, "email", "required"),
        (2, "role", "required"),
    ]
    assert users(db)[uid("user", 0)][1] == "N0"


def test_merge_file_needs_a_key_column(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed_users(db, 1)
    job = start(service, b"name,role\nX,admin\n", "nokey.csv", mode="merge")
    assert job["status"] == "failed"
    assert "mode=merge matches records by id or email" in job["error"]


def test_upsert_still_replaces_every_field(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed_users(db, 2)
    # today's behaviour for columns an upsert file lacks: optional ones become null (updated_at)
    # or their default (active), required ones fail the file
    body = f"id,email,name,role,created_at\n{uid('user', 0)},u0@example.com,Up,admin,{T1}\n"
    job = start(service, body.encode(), "upsert.csv")
    assert (job["updated_records"], job["failed"]) == (1, 0), job
    assert users(db)[uid("user", 0)][1:] == ("Up", "admin", True, T1, None)
    job = start(service, f"id,name\n{uid('user', 1)},X\n".encode(), "short.csv")
    assert job["status"] == "failed"
    assert "lacks required column(s): email, role, created_at" in job["error"]
    data = ndjson([{"id": uid("user", 1), "name": "X"}])
    job = start(service, data, "short.ndjson")
    assert (job["successful"], job["failed"]) == (0, 1)
    assert [e[1] for e in errors(service, job["job_id"])] == ["created_at", "email", "role"]
    assert users(db)[uid("user", 1)][1] == "N1"


def test_validate_only_is_unchanged(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed_users(db, 2)
    job = start(service, f"id,name\n{uid('user', 0)},X\n".encode(), "v.csv", mode="validate_only")
    assert job["status"] == "failed"
    assert "lacks required column(s)" in job["error"]
    data = ndjson([{"id": uid("user", 0), "name": "X"}])
    job = start(service, data, "v.ndjson", mode="validate_only")
    assert (job["successful"], job["failed"]) == (0, 1)
    assert users(db)[uid("user", 0)][1] == "N0"


def test_articles_merge_checks_rules_on_the_row_it_leaves(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    author = uid("user", 0)
    seed_users(db, 1)
    for n, status in ((0, "draft"), (1, "draft"), (2, "published")):
        db.execute(
            "INSERT INTO articles (id, slug, title, body, author_id, status, created_at, "
            "published_at) VALUES (%s, %s, 'T', 'B', %s, %s, %s, %s)",
            (uid("article", n), f"post-{n}", author, status, T0, T1 if n == 2 else None),
        )
    records = [
        {"id": uid("article", 0), "published_at": "2024-01-01T00:00:00Z"},  # a draft: refused
        {"id": uid("article", 1), "status": "published", "published_at": "2024-01-01T00:00:00Z"},
        {"slug": "post-2", "title": "Renamed"},  # matched by slug; keeps published_at
        {"id": uid("article", 0), "author_id": uid("user", 42)},  # no such user
    ]
    job = start(service, ndjson(records), "a.ndjson", resource="articles", mode="merge")
    assert job["status"] == "completed", job
    assert errors(service, job["job_id"]) == [
        (1, "published_at", "invalid_value"),
        (4, "author_id", "foreign_key"),
    ]
    rows = dict(
        (r[0], r[1:])
        for r in db.execute(
            "SELECT slug, title, status, published_at, author_id::text FROM articles"
        ).fetchall()
    )
    assert rows["post-0"] == ("T", "draft", None, author)
    assert rows["post-1"] == ("T", "published", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), author)
    assert rows["post-2"] == ("Renamed", "published", T1, author)


def test_comments_merge_without_an_id_is_required(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_users(db, 1)
    db.execute(
        "INSERT INTO articles (id, slug, title, body, author_id, status, created_at) "
        "VALUES (%s, 'p', 'T', 'B', %s, 'draft', %s)",
        (uid("article", 0), uid("user", 0), T0),
    )
    db.execute(
        "INSERT INTO comments (id, article_id, user_id, body, created_at) "
        "VALUES ('cm_1', %s, %s, 'old', %s)",
        (uid("article", 0), uid("user", 0), T0),
    )
    data = ndjson([{"id": "cm_1", "body": "new"}, {"body": "no id"}])
    job = start(service, data, "c.ndjson", resource="comments", mode="merge")
    assert errors(service, job["job_id"]) == [(2, "id", "required")]
    row = db.execute("SELECT body, article_id::text, created_at FROM comments").fetchone()
    assert row == ("new", uid("article", 0), T0)


def test_merge_through_a_mapping(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed_users(db, 3)
    mapping = json.dumps({"User ID": "id", "Full Name": "name", "Changed": "updated_at"})
    body = f"User ID,Full Name\n{uid('user', 0)},Mapped\n{uid('user', 9)},New\n"
    job = start(service, body.encode(), "m.csv", mode="merge", mapping=mapping)
    assert (job["updated_records"], job["failed"]) == (1, 1), job
    # a new record's missing fields are named as the file would name them
    assert errors(service, job["job_id"]) == [
        (2, "created_at", "required"),
        (2, "email", "required"),
        (2, "role", "required"),
    ]
    data = ndjson([{"User ID": uid("user", 1), "Changed": None}, {"id": uid("user", 2)}])
    job = start(service, data, "m.ndjson", mode="merge", mapping=mapping)
    assert (job["updated_records"], job["failed"]) == (1, 1), job
    # a record holding no key ("id" is not read: "User ID" is) matches no row
    assert sorted(errors(service, job["job_id"])) == [
        (2, "Full Name", "required"),
        (2, "created_at", "required"),
        (2, "email", "required"),
        (2, "role", "required"),
    ]
    got = users(db)
    assert got[uid("user", 0)][1:] == ("Mapped", "editor", False, T0, T1)
    assert got[uid("user", 1)][1:] == ("N1", "editor", False, T0, None)


def test_parquet_merge_through_a_mapping(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed_users(db, 2)
    table = pa.table({"USER ID": [uid("user", 0), uid("user", 1)], "Full Name": ["P0", None]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    mapping = json.dumps({"user id": "id", "full name": "name"})
    job = start(
        service, sink.getvalue(), "m.parquet", mode="merge", mapping=mapping,
        header_case="insensitive",
    )  # fmt: skip
    assert (job["updated_records"], job["failed"]) == (1, 1), job
    assert errors(service, job["job_id"]) == [(2, "Full Name", "required")]
    assert users(db)[uid("user", 0)][1:] == ("P0", "editor", False, T0, T1)
