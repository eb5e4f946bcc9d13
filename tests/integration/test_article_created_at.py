"""Articles without ``created_at`` (issue #8): a new article gets the import time (the job's
``started_at``), an existing one keeps its own; a given value replaces it (upsert).

End to end through the service (NDJSON and CSV, fresh, re-imported, mixed, validate_only), then
each write path below the service on a database of its own: the direct COPY's table
(``BatchLoader.prepare``), the plain INSERT, the ON CONFLICT upsert and the classified upsert
(``engine.imports.merge_sql``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import polars as pl
import psycopg
import pytest

from engine.db import connect_bulk
from engine.formats.reader import read_batches
from engine.imports import merge_sql
from engine.imports.load import BatchLoader
from engine.imports.validate import validate
from engine.resources import catalog
from tests.support.database import empty, migrated_database
from tests.support.servers import PostgresServer
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

ARTICLES = catalog()["articles"]
AUTHOR = "3f2b8c1e-7d4a-4e2b-9c1d-2a3b4c5d6e7f"
OLD = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
GIVEN = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def uid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"article-{n}"))


def article(n: int, **changes: Any) -> dict[str, Any]:
    rec = {"id": uid(n), "slug": f"post-{n}", "title": f"T{n}", "body": "B", "author_id": AUTHOR,
           "tags": ["x"], "status": "draft"}  # fmt: skip
    return {k: v for k, v in {**rec, **changes}.items() if v is not None}


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def seed_author(db: psycopg.Connection[Any]) -> None:
    db.execute(
        "INSERT INTO users (id, email, name, role, created_at) "
        "VALUES (%s, 'author@example.com', 'A', 'admin', now())",
        (AUTHOR,),
    )


def created(db: psycopg.Connection[Any]) -> dict[str, dt.datetime]:
    return {str(i): c for i, c in db.execute("SELECT id, created_at FROM articles")}


def started(db: psycopg.Connection[Any], job_id: str) -> dt.datetime:
    row = db.execute("SELECT started_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None and row[0] is not None
    return row[0]


def run(service: Bulkio, data: bytes, name: str, mode: str | None = None) -> dict[str, Any]:
    res = service.upload(None, "articles", data=data, filename=name, mode=mode)
    assert res.status_code == 202, res.text
    job = service.wait(res.json()["job_id"])
    assert job["status"] == "completed", job
    return job


# ------------------------------------------------------------------------- through the service


def test_ndjson_articles_without_created_at_are_all_accepted_and_stamped(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_author(db)
    n = 2500  # three batches of the service's 1000 rows
    job = run(service, ndjson([article(i) for i in range(n)]), "a.ndjson")
    assert (job["successful"], job["failed"], job["inserted_records"]) == (n, 0, n)
    assert set(created(db).values()) == {started(db, job["job_id"])}


def test_csv_articles_without_a_created_at_column_are_all_accepted(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_author(db)
    lines = ["id,slug,title,body,author_id,tags,status,created_at"]
    lines += [f"{uid(i)},post-{i},T,B,{AUTHOR},a|b,draft," for i in range(3)]  # empty cell
    job = run(service, "\n".join(lines).encode() + b"\n", "a.csv")
    assert (job["successful"], job["failed"]) == (3, 0)
    header_only = ["id,slug,title,body,author_id,status"]  # no created_at column at all
    header_only += [f"{uid(i)},post-{i},T,B,{AUTHOR},draft" for i in range(3, 6)]
    again = run(service, "\n".join(header_only).encode() + b"\n", "b.csv")
    assert (again["successful"], again["failed"]) == (3, 0)
    stamps = created(db)
    assert {stamps[uid(i)] for i in range(3)} == {started(db, job["job_id"])}
    assert {stamps[uid(i)] for i in range(3, 6)} == {started(db, again["job_id"])}


def test_reimport_keeps_or_replaces_created_at(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_author(db)
    run(service, ndjson([article(i) for i in range(4)]), "a.ndjson")
    db.execute("UPDATE articles SET created_at = %s", (OLD,))
    # A clean batch of existing ids without created_at: the fast upsert keeps the stored value.
    kept = run(service, ndjson([article(i, title="new") for i in range(4)]), "b.ndjson")
    assert (kept["updated_records"], kept["failed"]) == (4, 0)
    assert set(created(db).values()) == {OLD}
    assert db.execute("SELECT DISTINCT title FROM articles").fetchall() == [("new",)]
    # Not clean (one record matched by slug, no id): the classified upsert; a new one is stamped.
    mixed = [article(0, id=None), article(1), article(9)]
    job = run(service, ndjson(mixed), "c.ndjson")
    assert (job["inserted_records"], job["updated_records"], job["failed"]) == (1, 2, 0)
    stamps = created(db)
    assert [stamps[uid(i)] for i in (0, 1, 2, 3)] == [OLD] * 4
    assert stamps[uid(9)] == started(db, job["job_id"])
    # A given created_at replaces the stored one, on both paths.
    given = GIVEN.isoformat().replace("+00:00", "Z")
    run(service, ndjson([article(i, created_at=given) for i in (0, 1)]), "d.ndjson")
    run(service, ndjson([article(2, id=None, created_at=given), article(3)]), "e.ndjson")
    stamps = created(db)
    assert [stamps[uid(i)] for i in (0, 1, 2, 3)] == [GIVEN, GIVEN, GIVEN, OLD]


def test_validate_only_accepts_articles_without_created_at(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_author(db)
    job = run(service, ndjson([article(i) for i in range(5)]), "a.ndjson", mode="validate_only")
    assert (job["successful"], job["failed"], job["error_count"]) == (5, 0, 0)
    assert db.execute("SELECT count(*) FROM articles").fetchone() == (0,)


def test_users_and_comments_still_require_created_at(service: Bulkio) -> None:
    users = b'{"id":"%s","email":"a@b.cd","name":"A","role":"admin"}\n' % AUTHOR.encode()
    res = service.upload(None, "users", data=users, filename="u.ndjson")
    job = service.wait(res.json()["job_id"])
    assert [(e["field"], e["code"]) for e in job["errors"]] == [("created_at", "required")]
    res = service.upload(None, "users", data=b"id,email,name,role\n", filename="u.csv")
    job = service.wait(res.json()["job_id"])
    assert job["status"] == "failed"
    assert "lacks required column(s): created_at" in job["error"]


# ------------------------------------------------------------------- each write path, below


@pytest.fixture(scope="module")
def stamp_url(pg_server: PostgresServer) -> Iterator[str]:
    """A database of its own for the write paths run in this process (the first half of the
    module uses the session's service and database)."""
    yield from migrated_database(pg_server, "bulkio_stamp")


@pytest.fixture
def pg(stamp_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stamp_url, autocommit=True) as conn:
        empty(conn)
        seed_author(conn)
        conn.execute(
            "INSERT INTO articles (id, slug, title, body, author_id, status, created_at) "
            "VALUES (%s, 'post-0', 'T', 'B', %s, 'draft', %s)",
            (uid(0), AUTHOR, OLD),
        )
        yield conn


def start_job(pg: psycopg.Connection[Any]) -> tuple[str, dt.datetime]:
    job = str(uuid.uuid4())
    row = pg.execute(
        "INSERT INTO jobs (id, kind, resource, format, status, lease_owner, lease_expires, "
        "started_at) VALUES (%s, 'import', 'articles', 'ndjson', 'running', 'w', "
        "now() + interval '1 hour', now() - interval '1 day') RETURNING started_at",
        (job,),
    ).fetchone()
    assert row is not None
    return job, row[0]


def valid_rows(records: list[dict[str, Any]]) -> pl.DataFrame:
    (batch,) = read_batches(
        [ndjson(records)], "ndjson", ARTICLES.column_names, [],
        batch_rows=len(records), max_record_bytes=1 << 20, max_decompressed_bytes=1 << 30,
    )  # fmt: skip
    checked = validate(batch.frame, ARTICLES)
    assert checked.errors.is_empty(), checked.errors
    return checked.valid


def stage(conn: psycopg.Connection[Any], records: list[dict[str, Any]]) -> None:
    for ddl in merge_sql.stage_ddl(ARTICLES):
        conn.execute(ddl)
    names = ARTICLES.column_names
    rows = valid_rows(records).select("__row", "__line", *names).rows()
    marks = ", ".join(["%s"] * (len(names) + 2))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {merge_sql.stage_table(ARTICLES)} (__row, __line, {', '.join(names)}) "
            f"VALUES ({marks})",
            rows,
        )


def test_the_direct_copy_table_is_stamped_with_the_job_start(
    pg: psycopg.Connection[Any], stamp_url: str
) -> None:
    job, began = start_job(pg)
    bulk = connect_bulk(stamp_url)
    try:
        loader = BatchLoader(bulk, ARTICLES, job, "upsert", "w", 3600)
        given = GIVEN.isoformat()
        prepared = loader.prepare(valid_rows([article(5), article(6, created_at=given)]))
        loader.close()
    finally:
        bulk.close()
    assert prepared.direct is not None
    by_id = dict(
        zip(
            (uuid.UUID(bytes=b).hex for b in prepared.direct.column("id").to_pylist()),
            prepared.direct.column("created_at").to_pylist(),
            strict=True,
        )
    )
    assert by_id == {uuid.UUID(uid(5)).hex: began, uuid.UUID(uid(6)).hex: GIVEN}


@pytest.mark.parametrize("path", ["plain", "on-conflict", "classified"])
def test_each_sql_path_stamps_new_rows_and_keeps_existing_ones(
    pg: psycopg.Connection[Any], stamp_url: str, path: str
) -> None:
    job, began = start_job(pg)
    # plain INSERT: new rows only (an existing id fails it and the batch takes the next path)
    records = [article(5), article(6, created_at=GIVEN.isoformat())]
    if path != "plain":
        records += [article(0)]
    with psycopg.connect(stamp_url) as conn:
        stage(conn, records)
        if path == "classified":
            conn.execute(merge_sql.classify(ARTICLES, job, "upsert"))
            conn.execute(merge_sql.upsert(ARTICLES, job, "upsert"))
        else:
            conn.execute(merge_sql.fast_upsert(ARTICLES, job, "upsert", plain=path == "plain"))
        conn.commit()
    stamps = created(pg)
    assert (stamps[uid(5)], stamps[uid(6)], stamps[uid(0)]) == (began, GIVEN, OLD)
    pg.execute("UPDATE jobs SET status = 'completed' WHERE id = %s", (job,))
    given = [article(0, created_at=GIVEN.isoformat())]
    if path != "plain":  # an existing row with a value: replaced
        job2, _ = start_job(pg)
        with psycopg.connect(stamp_url) as conn:
            stage(conn, given)
            if path == "classified":
                conn.execute(merge_sql.classify(ARTICLES, job2, "upsert"))
                conn.execute(merge_sql.upsert(ARTICLES, job2, "upsert"))
            else:
                conn.execute(merge_sql.fast_upsert(ARTICLES, job2, "upsert"))
            conn.commit()
        assert created(pg)[uid(0)] == GIVEN
