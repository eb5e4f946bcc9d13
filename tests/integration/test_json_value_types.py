"""JSON values of the wrong type, end to end (issue #8): uploaded as NDJSON and as a JSON array,
read by the worker, reported as ``invalid_format`` rows naming the expected type — never stored
as text (``"tags": "not-a-list"`` used to become the tag ``not-a-list``)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

AUTHOR = "3f2b8c1e-7d4a-4e2b-9c1d-2a3b4c5d6e7f"
ARTICLE = "7a1c6f0e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"


def user(n: int, **changes: Any) -> dict[str, Any]:
    return {"id": f"00000000-0000-4000-8000-{n:012d}", "email": f"u{n}@example.com",
            "name": f"U{n}", "role": "admin", "active": True,
            "created_at": "2024-01-01T00:00:00Z", **changes}  # fmt: skip


def article(n: int, **changes: Any) -> dict[str, Any]:
    return {"id": f"00000000-0000-4000-9000-{n:012d}", "slug": f"post-{n}", "title": "T",
            "body": "B", "author_id": AUTHOR, "tags": ["a", "b"], "status": "draft",
            **changes}  # fmt: skip


def encode(records: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(records, indent=2).encode()
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_wrong_json_types_are_error_rows_and_are_not_stored(
    service: Bulkio, db: psycopg.Connection[Any], fmt: str
) -> None:
    users = [
        user(1),
        user(2, email=5),
        user(3, active="true"),
        user(4, name={"first": "A"}),
        user(5, created_at=["2024-01-01"]),
        user(6, active=False, updated_at=None),
    ]
    res = service.upload(None, "users", data=encode(users, fmt), filename=f"u.{fmt}")
    job = service.wait(res.json()["job_id"])
    assert (job["status"], job["successful"], job["failed"]) == ("completed", 2, 4), job
    assert [(e["row"], e["field"], e["code"], e["message"]) for e in job["errors"]] == [
        (2, "email", "invalid_format", "email must be a JSON string; got a number"),
        (3, "active", "invalid_format", "active must be a JSON boolean (true/false); got a string"),
        (4, "name", "invalid_format", "name must be a JSON string; got an object"),
        (5, "created_at", "invalid_format", "created_at must be a JSON string; got an array"),
    ]
    assert db.execute("SELECT email, active FROM users ORDER BY email").fetchall() == [
        ("u1@example.com", True),
        ("u6@example.com", False),
    ]

    db.execute("TRUNCATE users CASCADE")
    db.execute(
        "INSERT INTO users (id, email, name, role, created_at) "
        "VALUES (%s, 'a@example.com', 'A', 'admin', now())",
        (AUTHOR,),
    )
    articles = [article(1), article(2, tags="not-a-list"), article(3, title=1984)]
    res = service.upload(None, "articles", data=encode(articles, fmt), filename=f"a.{fmt}")
    job = service.wait(res.json()["job_id"])
    assert (job["status"], job["successful"], job["failed"]) == ("completed", 1, 2), job
    assert [(e["row"], e["field"], e["message"], e["value"]) for e in job["errors"]] == [
        (2, "tags", "tags must be a JSON array of strings; got a string", "not-a-list"),
        (3, "title", "title must be a JSON string; got a number", "1984"),
    ]
    assert db.execute("SELECT slug, tags FROM articles").fetchall() == [("post-1", ["a", "b"])]
