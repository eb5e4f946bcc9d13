"""GET /v1/jobs (issue #10): newest first, keyset cursor pages, filters, owner and admin scopes,
limit bounds and problem+json for bad parameters. The jobs are rows written straight into
PostgreSQL (finished, or running under a lease no worker holds), so no worker changes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.service import Bulkio, make_token

pytestmark = pytest.mark.integration

BASE = datetime(2024, 6, 1, tzinfo=UTC)
#: Jobs of "tester": kinds alternate, resources cycle, statuses cycle; every third shares the
#: creation time of the one before it (ties are broken by id).
MINE, THEIRS = 120, 30


@pytest.fixture
def listed(service: Bulkio, db: psycopg.Connection[Any]) -> Bulkio:
    db.execute(
        """INSERT INTO jobs (id, kind, resource, format, owner, status, created_at, lease_owner,
                             lease_expires, finished_at)
           SELECT gen_random_uuid(),
                  CASE WHEN i %% 2 = 0 THEN 'import' ELSE 'export' END,
                  (ARRAY['users', 'articles', 'comments'])[i %% 3 + 1],
                  'csv',
                  CASE WHEN i <= %(mine)s THEN 'tester' ELSE 'other' END,
                  s.status,
                  %(base)s + make_interval(mins => i - (CASE WHEN i %% 3 = 0 THEN 1 ELSE 0 END)),
                  CASE WHEN s.status = 'running' THEN 'nobody' END,
                  CASE WHEN s.status = 'running' THEN now() + interval '1 hour' END,
                  CASE WHEN s.status <> 'running' THEN now() END
           FROM generate_series(1, %(total)s) AS i
           CROSS JOIN LATERAL (SELECT (ARRAY['completed', 'failed', 'cancelled', 'completed',
                                             'running'])[i %% 5 + 1] AS status) AS s""",
        {"mine": MINE, "total": MINE + THEIRS, "base": BASE},
    )
    return service


def _expected(db: psycopg.Connection[Any], where: str = "true", *params: Any) -> list[str]:
    rows = db.execute(
        f"SELECT id::text FROM jobs WHERE {where} ORDER BY created_at DESC, id DESC", params
    ).fetchall()
    return [r[0] for r in rows]


def _walk(client: httpx.Client, params: dict[str, Any]) -> tuple[list[str], int]:
    """Every page from the first, by the `next` links; (ids in order, pages)."""
    res = client.get("/v1/jobs", params=params)
    ids: list[str] = []
    pages = 0
    while True:
        assert res.status_code == 200, res.text
        body = res.json()
        pages += 1
        ids += [j["job_id"] for j in body["jobs"]]
        if body["next"] is None:
            assert body["next_cursor"] is None and "link" not in res.headers
            return ids, pages
        assert res.headers["link"] == f'<{body["next"]}>; rel="next"'
        assert f"cursor={body['next_cursor']}" in body["next"]
        res = client.get(body["next"])


def _owner_client(service: Bulkio, owner: str = "tester", scopes: list[str] | None = None) -> Any:
    scopes = scopes or ["imports:read", "exports:read"]
    return service.client_for(make_token(service.env["BULKIO_DATABASE_URL"], owner, scopes))


def test_pages_list_every_own_job_once_newest_first(
    listed: Bulkio, db: psycopg.Connection[Any]
) -> None:
    client = _owner_client(listed)
    ids, pages = _walk(client, {"limit": 7})
    assert ids == _expected(db, "owner = 'tester'")
    assert len(ids) == MINE and pages == -(-MINE // 7)
    first = client.get("/v1/jobs").json()
    assert len(first["jobs"]) == 20  # the default limit


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"kind": "import"}, "kind = 'import'"),
        ({"resource": "articles"}, "resource = 'articles'"),
        ({"status": "failed"}, "status = 'failed'"),
        ({"status": "running"}, "status = 'running'"),
        ({"created_after": "2024-06-01T01:00:00Z"}, "created_at >= '2024-06-01T01:00:00Z'"),
        ({"created_before": "2024-06-01T00:30:00+00:00"}, "created_at < '2024-06-01T00:30:00Z'"),
        (
            {"kind": "export", "status": "completed", "created_after": "2024-06-01T00:20:00"},
            "kind = 'export' AND status = 'completed' AND created_at >= '2024-06-01T00:20:00Z'",
        ),
        (
            {"resource": "users", "created_after": "2024-06-01T00:10:00Z",
             "created_before": "2024-06-01T01:40:00Z"},
            "resource = 'users' AND created_at >= '2024-06-01T00:10:00Z' "
            "AND created_at < '2024-06-01T01:40:00Z'",
        ),
    ],
)  # fmt: skip
def test_filters_hold_on_every_page(
    listed: Bulkio, db: psycopg.Connection[Any], params: dict[str, str], where: str
) -> None:
    ids, _ = _walk(_owner_client(listed), {**params, "limit": 4})
    assert ids == _expected(db, f"owner = 'tester' AND {where}")
    assert ids  # the filter matched something


def test_admin_sees_every_owner_and_may_filter_by_owner(
    listed: Bulkio, db: psycopg.Connection[Any]
) -> None:
    admin = listed.client  # an admin token
    assert _walk(admin, {"limit": 50})[0] == _expected(db)
    assert _walk(admin, {"limit": 50, "owner": "other"})[0] == _expected(db, "owner = 'other'")
    assert _walk(admin, {"owner": "nobody-at-all"})[0] == []
    mine = _owner_client(listed)
    assert mine.get("/v1/jobs", params={"owner": "tester"}).status_code == 200
    res = mine.get("/v1/jobs", params={"owner": "other"})
    assert res.status_code == 403 and "admin" in res.json()["detail"]
    theirs = _owner_client(listed, "other")
    assert _walk(theirs, {})[0] == _expected(db, "owner = 'other'")


def test_a_token_lists_only_the_kinds_it_may_read(
    listed: Bulkio, db: psycopg.Connection[Any]
) -> None:
    imports_only = _owner_client(listed, scopes=["imports:read", "imports:write"])
    assert _walk(imports_only, {"limit": 100})[0] == _expected(
        db, "owner = 'tester' AND kind = 'import'"
    )
    assert imports_only.get("/v1/jobs", params={"kind": "export"}).status_code == 403
    writer = _owner_client(listed, scopes=["imports:write"])
    assert writer.get("/v1/jobs").status_code == 403


def test_jobs_created_between_pages_neither_repeat_nor_skip(
    listed: Bulkio, db: psycopg.Connection[Any]
) -> None:
    client = _owner_client(listed)
    before = _expected(db, "owner = 'tester'")
    first = client.get("/v1/jobs", params={"limit": 10}).json()
    db.execute(
        "INSERT INTO jobs (id, kind, resource, format, owner, status, created_at, finished_at) "
        "SELECT gen_random_uuid(), 'import', 'users', 'csv', 'tester', 'completed', "
        "%s + make_interval(days => i), now() FROM generate_series(1, 5) AS i",
        (BASE,),
    )
    rest, _ = _walk(client, {})  # a fresh walk sees the new ones first
    assert len(rest) == MINE + 5
    ids = [j["job_id"] for j in first["jobs"]]
    res = client.get(first["next"])
    while True:
        body = res.json()
        ids += [j["job_id"] for j in body["jobs"]]
        if not body["next"]:
            break
        res = client.get(body["next"])
    assert ids == before


def test_items_are_job_views_without_inline_errors(listed: Bulkio) -> None:
    client = _owner_client(listed)
    item = client.get("/v1/jobs", params={"limit": 1}).json()["jobs"][0]
    one = client.get(f"/v1/jobs/{item['job_id']}").json()
    assert "errors" not in item and "errors" in one
    volatile = {"errors", "events_url", "duration_ms", "rows_per_sec"}
    assert {k: v for k, v in item.items() if k not in volatile} == {
        k: v for k, v in one.items() if k not in volatile
    }
    assert item["events_url"].split("?")[0] == one["events_url"].split("?")[0]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"kind": "imports"}, "kind"),
        ({"resource": "orders"}, "resource"),
        ({"status": "done"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2024-13-01"}, "created_before"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "A" * 31 + "="}, "cursor"),
        ({"stauts": "failed"}, "unknown query parameter 'stauts'"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    listed: Bulkio, params: dict[str, str], named: str
) -> None:
    res = listed.client.get("/v1/jobs", params=params)
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert res.json()["detail"].startswith(named)


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_accepted(listed: Bulkio, limit: int) -> None:
    body = listed.client.get("/v1/jobs", params={"limit": limit}).json()
    assert len(body["jobs"]) == limit


def test_any_well_formed_cursor_is_a_position(listed: Bulkio, db: psycopg.Connection[Any]) -> None:
    """The cursor is opaque but total: any 32 base64url characters name a place in the order
    (far past / far future clamp), so a well-formed one never fails."""
    admin = listed.client
    assert admin.get("/v1/jobs", params={"cursor": "_" * 32}).json()["jobs"] == []
    far_future = "f" + "_" * 10 + "A" * 21  # a large positive time
    got = admin.get("/v1/jobs", params={"cursor": far_future, "limit": 100}).json()["jobs"]
    assert [j["job_id"] for j in got] == _expected(db)[:100]
