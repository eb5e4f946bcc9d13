"""GET /v1/jobs stays one short index walk with hundreds of thousands of jobs (issue #10).

300,000 job rows (generate_series) in a database of their own: 40% belong to one big owner, the
rest to 997 small ones; a quarter are exports; resources in thirds; ~2% failed, ~0.5% running.
Every filter combination the API can send, for the big owner, a small one and an admin, first
page and a page further down by cursor, is planned the way the API runs it (engine.job_list,
never a prepared statement) and run under EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON):

* no Seq Scan, no Sort, no Bitmap scan anywhere in the plan;
* the page's ids come from an Index Only Scan of one of the list indexes;
* the jobs table is read for the page's rows only (limit + 1 primary-key lookups);
* the index entries walked are limit + 1 when every filter is an index condition, and about
  (limit + 1) / selectivity when kind or resource (columns INCLUDEd in the index, checked on its
  entries) filter them;
* the buffers touched are bounded by the page size, not by the table's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from engine import job_list
from engine.job_list import JobFilter, Position
from tests.support.database import migrated_database
from tests.support.servers import PostgresServer

pytestmark = pytest.mark.integration

ROWS = 300_000
START = datetime(2025, 1, 1, tzinfo=UTC)
LIST_INDEXES = {
    "jobs_owner_list_idx",
    "jobs_list_idx",
    "jobs_owner_status_list_idx",
    "jobs_status_list_idx",
}
#: Shares of the rows matching kind / resource filters (the data below).
SHARE = {("kind", "export"): 0.25, ("kind", "import"): 0.75, ("resource", "users"): 1 / 3}
MIDDLE = START + timedelta(seconds=ROWS * 5 // 2)


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server)


@pytest.fixture(scope="module")
def big_db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The event triggers are not under test here (and would write 300,000 `queued` events).
        conn.execute("ALTER TABLE jobs DISABLE TRIGGER USER")
        # The test cluster commits asynchronously; VACUUM cannot mark pages all-visible before
        # the commit is flushed. Commit the load as a production server would.
        conn.execute("SET synchronous_commit = on")
        conn.execute(
            """INSERT INTO jobs (id, kind, resource, format, owner, status, created_at)
               SELECT gen_random_uuid(),
                      CASE WHEN h %% 4 = 0 THEN 'export' ELSE 'import' END,
                      (ARRAY['users', 'articles', 'comments'])[h %% 3 + 1],
                      'csv',
                      CASE WHEN h %% 5 < 2 THEN 'big' ELSE 'owner-' || (h %% 997) END,
                      CASE WHEN h %% 211 = 7 THEN 'running' WHEN h %% 223 = 9 THEN 'queued'
                           WHEN h %% 47 = 1 THEN 'failed' WHEN h %% 101 = 3 THEN 'cancelled'
                           ELSE 'completed' END,
                      -- two jobs per 10 s: ties on created_at are broken by id
                      %s + make_interval(secs => (i / 2) * 10)
               FROM generate_series(1, %s) AS i,
                    LATERAL (SELECT abs(hashint4(i)) AS h) AS x""",
            (START, ROWS),
        )
        conn.execute("VACUUM ANALYZE jobs")  # what autovacuum does to a table this size
        yield conn


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain(
    conn: psycopg.Connection[Any], flt: JobFilter, after: Position | None, limit: int
) -> dict[str, Any]:
    sql, params = job_list.page_sql(flt, after, limit + 1)
    row = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params, prepare=False
    ).fetchone()
    assert row is not None
    return row[0][0]["Plan"]  # type: ignore[no-any-return]


SCOPES = {"big owner": "big", "small owner": "owner-5", "admin": None}
FILTERS = {
    "none": JobFilter(),
    "kind": JobFilter(kinds=("export",)),
    "one readable kind": JobFilter(kinds=("import",)),
    "resource": JobFilter(resource="users"),
    "status failed": JobFilter(status="failed"),
    "status running": JobFilter(status="running"),
    "created_after": JobFilter(created_after=MIDDLE),
    "created_before": JobFilter(created_before=MIDDLE),
    "kind+resource+created_before": JobFilter(
        kinds=("export",), resource="users", created_before=MIDDLE
    ),
    "status+kind+created_after": JobFilter(
        status="completed", kinds=("import",), created_after=START
    ),
    "everything": JobFilter(
        status="failed",
        kinds=("import",),
        resource="users",
        created_after=START,
        created_before=MIDDLE,
    ),
}


def _share(flt: JobFilter) -> float:
    share = 1.0
    for kind in flt.kinds or ():
        share *= SHARE[("kind", kind)]
    if flt.resource:
        share *= SHARE[("resource", flt.resource)]
    return share


@pytest.mark.parametrize("limit", [20, 100])
@pytest.mark.parametrize("scope", list(SCOPES))
@pytest.mark.parametrize("name", list(FILTERS))
def test_every_filter_combination_is_one_short_index_walk(
    big_db: psycopg.Connection[Any], name: str, scope: str, limit: int
) -> None:
    flt = replace(FILTERS[name], owner=SCOPES[scope])
    first, last = job_list.page(big_db, flt, None, limit)
    pages = [(None, len(first))]
    if last is not None:  # and a page further down, from the first page's cursor
        pages.append((last, len(job_list.page(big_db, flt, last, limit)[0])))
    for after, found in pages:
        plan = _explain(big_db, flt, after, limit)
        nodes = list(_nodes(plan))
        kinds = {n["Node Type"] for n in nodes}
        assert not kinds & {"Seq Scan", "Sort", "Incremental Sort", "Bitmap Heap Scan"}, kinds
        walks = [n for n in nodes if n["Node Type"] == "Index Only Scan"]
        assert len(walks) == 1 and walks[0]["Index Name"] in LIST_INDEXES, json.dumps(plan)
        walked = walks[0]["Actual Rows"] + walks[0].get("Rows Removed by Filter", 0)
        fetches = [n for n in nodes if n.get("Index Name") == "jobs_pkey"]
        assert len(fetches) == 1 and fetches[0]["Node Type"] == "Index Scan"
        read = fetches[0]["Actual Rows"] * fetches[0]["Actual Loops"]
        assert found <= read == plan["Actual Rows"] <= limit + 1
        bound = limit + 1 if _share(flt) == 1.0 else math.ceil(3 * (limit + 1) / _share(flt))
        assert walked <= bound, (walked, bound, walks[0])
        buffers = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
        assert buffers <= 5 * (limit + 1) + 40, buffers


def test_pages_on_the_big_table_match_a_plain_sort(big_db: psycopg.Connection[Any]) -> None:
    """The keyset pages equal ORDER BY … OFFSET on the same data (ties by id included)."""
    for flt in (JobFilter(owner="owner-5"), JobFilter(status="failed", kinds=("export",))):
        clause, params = job_list.where(flt, None)
        expected = [
            r[0]
            for r in big_db.execute(
                f"SELECT id::text FROM jobs WHERE {clause} ORDER BY created_at DESC, id DESC",
                params,
            )
        ]
        got: list[str] = []
        after: Position | None = None
        while True:
            found, after = job_list.page(big_db, flt, after, 37)
            got += [j.id for j in found]
            if after is None:
                break
        assert got == expected and len(got) > 37
