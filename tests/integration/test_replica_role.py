"""Skipping triggers (``session_replication_role = replica``) only where it skips nothing but the
FK checks bulkio does itself (engine/imports/references.py: ``probe`` and ``recheck``).

Replica mode also skips the internal triggers that re-check DEFERRABLE unique and exclusion
constraints, so such tables are refused; and a trigger, rule, foreign key or deferrable
constraint added while a job runs is noticed by the next batch, which re-checks the catalog in
its own transaction after taking the table's ROW EXCLUSIVE lock (held to the commit, so nothing
can be added in between). In-process loaders on a real PostgreSQL, like test_references.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import adbc_driver_manager
import msgspec
import psycopg
import pytest

from engine.db import connect_bulk
from engine.formats.reader import read_batches
from engine.imports.load import BatchInput, BatchLoader
from engine.imports.references import probe
from engine.imports.validate import validate
from engine.resources import catalog
from tests.support.database import empty, migrated_database
from tests.support.faults import FaultyConnection, faulty_connect
from tests.support.servers import PostgresServer

pytestmark = pytest.mark.integration

COMMENTS = catalog()["comments"]
ROWS = 10


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server, "bulkio_replica")


@pytest.fixture
def pg(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The test connection (``db``) on empty tables but one user and one article; what a test
    adds to the schema is removed after it."""
    empty(db)
    db.execute(
        "INSERT INTO users (id, email, name, role, created_at) "
        "VALUES (%s, 'u@example.com', 'U', 'reader', now())",
        (uid("u"),),
    )
    db.execute(
        "INSERT INTO articles (id, slug, title, body, author_id, status, created_at) "
        "VALUES (%s, 'a', 'T', 'B', %s, 'draft', now())",
        (uid("a"), uid("u")),
    )
    yield db
    db.execute("DROP TABLE IF EXISTS comment_audit")
    db.execute("DROP TRIGGER IF EXISTS audit ON comments")
    db.execute("DROP FUNCTION IF EXISTS audit_comment()")
    for name in ("comments_body_key", "comments_body_excl"):
        db.execute(f"ALTER TABLE comments DROP CONSTRAINT IF EXISTS {name}")


@pytest.fixture
def bulk(database_url: str) -> Iterator[Any]:
    conn = connect_bulk(database_url)
    yield conn
    conn.close()


def uid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def batches(bodies: list[list[str]]) -> list[BatchInput]:
    """One file of comments on the one article, in batches of the given bodies."""
    records = [
        {
            "id": uid("c", b, i),
            "article_id": uid("a"),
            "user_id": uid("u"),
            "body": body,
            "created_at": "2024-05-01T12:00:00Z",
        }
        for b, group in enumerate(bodies)
        for i, body in enumerate(group)
    ]
    data = b"".join(msgspec.json.encode(r) + b"\n" for r in records)
    out = []
    for batch in read_batches(
        [data],
        "ndjson",
        COMMENTS.column_names,
        COMMENTS.required_columns,
        batch_rows=len(bodies[0]),
        max_record_bytes=1 << 20,
        max_decompressed_bytes=1 << 30,
    ):
        checked = validate(batch.frame, COMMENTS)
        out.append(
            BatchInput(
                batch.index, batch.rows, checked.valid, batch.errors, batch.after, batch.bytes_end
            )
        )
    return out


def start_job(pg: psycopg.Connection[Any]) -> str:
    job = str(uuid.uuid4())
    pg.execute(
        "INSERT INTO jobs (id, kind, resource, format, status, lease_owner, lease_expires) "
        "VALUES (%s, 'import', 'comments', 'ndjson', 'running', 'w', now() + interval '1 hour')",
        (job,),
    )
    return job


def bodies(tag: str, n: int = ROWS) -> list[str]:
    return [f"{tag} {i}" for i in range(n)]


def add_audit_trigger(pg: psycopg.Connection[Any]) -> None:
    pg.execute("CREATE TABLE IF NOT EXISTS comment_audit (id text NOT NULL)")
    pg.execute(
        "CREATE OR REPLACE FUNCTION audit_comment() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO comment_audit VALUES (NEW.id); RETURN NEW; END $$"
    )
    pg.execute(
        "CREATE TRIGGER audit AFTER INSERT ON comments "
        "FOR EACH ROW EXECUTE FUNCTION audit_comment()"
    )


DEFERRABLE = {
    "unique": "ADD CONSTRAINT comments_body_key UNIQUE (body) DEFERRABLE",
    "unique-deferred": (
        "ADD CONSTRAINT comments_body_key UNIQUE (body) DEFERRABLE INITIALLY DEFERRED"
    ),
    "exclusion": "ADD CONSTRAINT comments_body_excl EXCLUDE USING btree (body WITH =) DEFERRABLE",
}


@pytest.mark.parametrize("kind", DEFERRABLE)
def test_a_deferrable_unique_or_exclusion_constraint_is_refused(
    pg: psycopg.Connection[Any], bulk: Any, kind: str
) -> None:
    pg.execute(f"ALTER TABLE comments {DEFERRABLE[kind]}")
    name = DEFERRABLE[kind].split()[2]
    assert probe(bulk, COMMENTS) == (
        f"comments has deferrable constraints ({name}), whose checks "
        "session_replication_role would skip"
    )


def test_with_a_deferrable_unique_constraint_duplicates_are_still_rejected(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str
) -> None:
    pg.execute(f"ALTER TABLE comments {DEFERRABLE['unique']}")
    first, second = batches([bodies("same"), bodies("same")])
    loader = BatchLoader(
        bulk,
        COMMENTS,
        start_job(pg),
        "upsert",
        "w",
        3600,
        connect=lambda: connect_bulk(database_url),
    )
    try:
        assert loader.apply(first).inserted == ROWS
        # Not a conflict bulkio classifies: PostgreSQL refuses the batch (after bounded retries).
        with pytest.raises(adbc_driver_manager.IntegrityError, match="comments_body_key"):
            loader.apply(second)
    finally:
        loader.close()
    assert pg.execute("SELECT count(*), count(DISTINCT body) FROM comments").fetchone() == (
        ROWS,
        ROWS,
    )
    assert loader._locker is None  # refused: the triggers checked


def test_a_trigger_added_mid_job_fires_for_the_later_batches(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str
) -> None:
    first, second, third = batches([bodies("one"), bodies("two"), bodies("three")])
    loader = BatchLoader(
        bulk,
        COMMENTS,
        start_job(pg),
        "upsert",
        "w",
        3600,
        connect=lambda: connect_bulk(database_url),
    )
    try:
        assert loader._locker is not None
        loader.apply(first)  # set-based
        # The reading thread has already locked the next batch's parents when the trigger comes.
        ahead = loader.prepare(second.valid)
        assert ahead.hold is not None and ahead.hold.result(timeout=30) is not None
        add_audit_trigger(pg)
        loader.apply(second, ahead)
        loader.apply(third)
    finally:
        loader.close()
    audited = {r[0] for r in pg.execute("SELECT id FROM comment_audit").fetchall()}
    later = {uid("c", b, i) for b in (1, 2) for i in range(ROWS)}
    assert audited == later
    assert pg.execute("SELECT count(*) FROM comments").fetchone() == (3 * ROWS,)
    assert not loader._set_based


def test_a_deferrable_constraint_added_mid_job_still_rejects_duplicates(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str
) -> None:
    first, second = batches([bodies("same"), bodies("same")])
    loader = BatchLoader(
        bulk,
        COMMENTS,
        start_job(pg),
        "upsert",
        "w",
        3600,
        connect=lambda: connect_bulk(database_url),
    )
    try:
        loader.apply(first)
        ahead = loader.prepare(second.valid)
        assert ahead.hold is not None and ahead.hold.result(timeout=30) is not None
        pg.execute(f"ALTER TABLE comments {DEFERRABLE['unique']}")
        with pytest.raises(adbc_driver_manager.IntegrityError, match="comments_body_key"):
            loader.apply(second, ahead)
    finally:
        loader.close()
    assert pg.execute("SELECT count(*), count(DISTINCT body) FROM comments").fetchone() == (
        ROWS,
        ROWS,
    )


def test_nothing_can_be_added_between_the_check_and_the_commit(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str
) -> None:
    """At the direct COPY's COMMIT (after the re-check), CREATE TRIGGER on the table waits."""
    seen: list[str] = []

    def fault(event: str, conn: FaultyConnection) -> None:
        if event != "commit":
            return
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("SET lock_timeout = '200ms'")
            try:
                add_audit_trigger(other)
                seen.append("created")
            except psycopg.errors.LockNotAvailable:
                seen.append("waited")

    (batch,) = batches([bodies("one")])
    loader = BatchLoader(
        bulk,
        COMMENTS,
        start_job(pg),
        "upsert",
        "w",
        3600,
        connect=faulty_connect(database_url, COMMENTS.table, fault),
    )
    try:
        assert loader.apply(batch).inserted == ROWS
    finally:
        loader.close()
    assert seen == ["waited"]
    add_audit_trigger(pg)  # once committed, it goes through


CHANGES = {
    "trigger": None,  # add_audit_trigger
    "rule": "CREATE RULE audit AS ON INSERT TO comments DO ALSO NOTHING",
    "foreign key": "ALTER TABLE comments ADD COLUMN reviewer uuid REFERENCES users (id)",
    "deferrable constraint": f"ALTER TABLE comments {DEFERRABLE['exclusion']}",
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_mid_job_sends_the_rest_of_the_job_to_the_triggers(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str, change: str
) -> None:
    first, second, third = batches([bodies("one"), bodies("two"), bodies("three")])
    loader = BatchLoader(
        bulk,
        COMMENTS,
        start_job(pg),
        "upsert",
        "w",
        3600,
        connect=lambda: connect_bulk(database_url),
    )
    try:
        loader.apply(first)
        ahead = loader.prepare(second.valid)
        assert ahead.hold is not None and ahead.hold.result(timeout=30) is not None
        sql = CHANGES[change]
        if sql is None:
            add_audit_trigger(pg)
        else:
            pg.execute(sql)
        assert loader._set_based
        assert loader.apply(second, ahead).inserted == ROWS
        assert not loader._set_based
        assert loader.prepare(third.valid).hold is None  # nothing locked for it any more
        assert loader.apply(third).inserted == ROWS
    finally:
        loader.close()
        pg.execute("DROP RULE IF EXISTS audit ON comments")
        pg.execute("ALTER TABLE comments DROP COLUMN IF EXISTS reviewer")
