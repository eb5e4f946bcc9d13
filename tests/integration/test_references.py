"""Set-based reference checks (engine/references.py) on a real PostgreSQL, below the service:
when they may be used, that they give the FK triggers' results, and that they hold the parents'
locks until the batch is committed (a concurrent DELETE waits, then fails its own FK check).

These tests use a database of their own (migrated like the service's) and drive
:class:`engine.imports.load.BatchLoader` directly, with ADBC connections like a worker's.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import pytest

from engine.db import connect_bulk
from engine.formats.reader import read_batches
from engine.imports.load import BatchInput, BatchLoader
from engine.imports.references import ReferenceLocker, probe
from engine.imports.validate import validate
from engine.resources import catalog
from tests.support.database import empty, migrated_database
from tests.support.servers import PostgresServer
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

RESOURCES = catalog()
COMMENTS = RESOURCES["comments"]


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server, "bulkio_refs")


@pytest.fixture
def pg(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The test connection (``db``) on empty tables."""
    empty(db)
    yield db


@pytest.fixture
def bulk(database_url: str) -> Iterator[Any]:
    conn = connect_bulk(database_url)
    yield conn
    conn.close()


def uid(tag: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}{n}"))


def seed_parents(pg: psycopg.Connection[Any], users: int = 5, articles: int = 5) -> None:
    for n in range(users):
        pg.execute(
            "INSERT INTO users (id, email, name, role, created_at) "
            "VALUES (%s, %s, 'U', 'reader', now())",
            (uid("u", n), f"u{n}@example.com"),
        )
    for n in range(articles):
        pg.execute(
            "INSERT INTO articles (id, slug, title, body, author_id, status, created_at) "
            "VALUES (%s, %s, 'T', 'B', %s, 'draft', now())",
            (uid("a", n), f"a-{n}", uid("u", 0)),
        )


def comment(n: int, article: str, user: str) -> dict[str, str]:
    return {
        "id": uid("c", n),
        "article_id": article,
        "user_id": user,
        "body": f"comment {n}",
        "created_at": "2024-05-01T12:00:00Z",
    }


def start_job(pg: psycopg.Connection[Any]) -> str:
    job = str(uuid.uuid4())
    pg.execute(
        "INSERT INTO jobs (id, kind, resource, format, status, lease_owner, lease_expires) "
        "VALUES (%s, 'import', 'comments', 'ndjson', 'running', 'w', now() + interval '1 hour')",
        (job,),
    )
    return job


def batch_of(records: list[dict[str, str]], index: int = 0) -> BatchInput:
    """One batch of comment records, as batch ``index`` of a job (its checkpoint included)."""
    data = b"".join(msgspec.json.encode(r) + b"\n" for r in records)
    (batch,) = read_batches(
        [data],
        "ndjson",
        COMMENTS.column_names,
        COMMENTS.required_columns,
        batch_rows=len(records),
        max_record_bytes=1 << 20,
        max_decompressed_bytes=1 << 30,
    )
    checked = validate(batch.frame, COMMENTS)
    assert checked.errors.height == 0, checked.errors
    after = dataclasses.replace(batch.after, batch=index + 1)
    return BatchInput(index, batch.rows, checked.valid, batch.errors, after, batch.bytes_end)


def loader_for(bulk: Any, database_url: str, job: str, checks: str = "auto") -> BatchLoader:
    return BatchLoader(
        bulk, COMMENTS, job, "upsert", "w", 3600,
        reference_checks=checks, connect=lambda: connect_bulk(database_url),
    )  # fmt: skip


@pytest.fixture
def loader(pg: psycopg.Connection[Any], bulk: Any, database_url: str) -> Iterator[BatchLoader]:
    """A set-based comments loader of a running job, over 5 users and 5 articles."""
    seed_parents(pg)
    batches = loader_for(bulk, database_url, start_job(pg))
    yield batches
    batches.close()


# ------------------------------------------------------------------------------------ probe


def test_set_based_checks_are_allowed_for_the_shipped_schema(bulk: Any) -> None:
    assert probe(bulk, RESOURCES["comments"]) is None
    assert probe(bulk, RESOURCES["articles"]) is None
    assert probe(bulk, RESOURCES["users"]) == "the table has no references"


def test_a_role_needs_the_grant_to_skip_triggers(pg_server: Any, database_url: str) -> None:
    dbname = database_url.rsplit("/", 1)[1]
    role = f"plain_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN")
    try:
        conn = connect_bulk(pg_server.url(dbname, user=role))
        try:
            reason = probe(conn, COMMENTS)
            assert reason is not None
            assert "GRANT SET ON PARAMETER session_replication_role" in reason
            pg_server.execute(f"GRANT SET ON PARAMETER session_replication_role TO {role}")
            assert probe(conn, COMMENTS) is None
        finally:
            conn.close()
    finally:
        pg_server.execute(f"REVOKE SET ON PARAMETER session_replication_role FROM {role}")
        pg_server.execute(f"DROP ROLE {role}")


def test_a_trigger_of_the_tables_own_keeps_the_fk_triggers(
    pg: psycopg.Connection[Any], bulk: Any
) -> None:
    pg.execute(
        "CREATE FUNCTION audit_noop() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN NEW; END $$"
    )
    pg.execute(
        "CREATE TRIGGER audit AFTER INSERT ON comments FOR EACH ROW EXECUTE FUNCTION audit_noop()"
    )
    try:
        assert probe(bulk, COMMENTS) == "comments has triggers or rules of its own"
    finally:
        pg.execute("DROP TRIGGER audit ON comments")
        pg.execute("DROP FUNCTION audit_noop()")
    assert probe(bulk, COMMENTS) is None


def test_a_foreign_key_bulkio_does_not_know_keeps_the_fk_triggers(
    pg: psycopg.Connection[Any], bulk: Any
) -> None:
    pg.execute("ALTER TABLE comments ADD COLUMN reviewer uuid REFERENCES users (id)")
    try:
        reason = probe(bulk, COMMENTS)
        assert reason == "comments has a foreign key bulkio does not check (reviewer)"
    finally:
        pg.execute("ALTER TABLE comments DROP COLUMN reviewer")


def test_the_setting_and_a_missing_connection_keep_the_fk_triggers(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str
) -> None:
    job = start_job(pg)
    assert loader_for(bulk, database_url, job, checks="triggers")._locker is None
    no_connect = BatchLoader(bulk, COMMENTS, job, "upsert", "w", 3600)
    assert no_connect._locker is None
    auto = loader_for(bulk, database_url, job)
    assert auto._locker is not None
    auto.close()
    with pytest.raises(ValueError, match="reference_checks"):
        loader_for(bulk, database_url, job, checks="sometimes")


# ------------------------------------------------------------------------- same results


def table_state(pg: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
    rows = pg.execute("SELECT id, article_id, user_id, body FROM comments ORDER BY id").fetchall()
    errors = pg.execute(
        "SELECT row_no, field, code, message, value FROM job_errors ORDER BY row_no, field"
    ).fetchall()
    return rows, errors


@pytest.mark.parametrize("checks", ["auto", "triggers"])
def test_set_based_checks_give_the_fk_triggers_results(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str, checks: str
) -> None:
    seed_parents(pg)
    job = start_job(pg)
    loader = loader_for(bulk, database_url, job, checks)
    ghost = uid("a", 99)  # no such article
    batches = [
        [comment(n, uid("a", n % 5), uid("u", n % 3)) for n in range(0, 40)],
        [comment(n, uid("a", n % 5) if n != 45 else ghost, uid("u", n % 5)) for n in range(40, 80)],
        [comment(n, uid("a", 4), uid("u", 4)) for n in range(80, 120)],
    ]
    outcomes = []
    try:
        for index, records in enumerate(batches):
            outcomes.append(loader.apply(batch_of(records, index)))
    finally:
        loader.close()
    assert [(o.inserted, o.failed) for o in outcomes] == [(40, 0), (39, 1), (40, 0)]
    rows, errors = table_state(pg)
    assert len(rows) == 119
    assert [e[:3] for e in errors] == [(6, "article_id", "foreign_key")], errors
    assert ghost in str(errors[0])
    # The other mode, on the same input, stores exactly the same.
    if checks == "auto":
        set_based = (rows, errors)
        pg.execute("TRUNCATE comments, job_errors")
        pg.execute("UPDATE jobs SET next_batch = 0")
        other = loader_for(bulk, database_url, job, "triggers")
        try:
            for index, records in enumerate(batches):
                other.apply(batch_of(records, index))
        finally:
            other.close()
        assert table_state(pg) == set_based


# ------------------------------------------------------------------------ the parents' locks


def test_a_concurrent_delete_of_a_parent_waits_for_the_batch_then_fails(
    pg: psycopg.Connection[Any], loader: BatchLoader, database_url: str
) -> None:
    batch = batch_of([comment(n, uid("a", 1), uid("u", 3)) for n in range(10)])
    prepared = loader.prepare(batch.valid)  # the reading thread's step: parents locked
    assert prepared.hold is not None and prepared.hold.result() is not None
    outcome: dict[str, BaseException | None] = {}

    def delete_parent() -> None:
        with psycopg.connect(database_url, autocommit=True) as other:
            try:
                other.execute("DELETE FROM users WHERE id = %s", (uid("u", 3),))
                outcome["error"] = None
            except psycopg.Error as exc:
                outcome["error"] = exc

    deleter = threading.Thread(target=delete_parent)
    deleter.start()
    try:
        wait_until(
            lambda: (
                pg.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'DELETE FROM users%%'"
                ).fetchone()
                == (1,)
            ),
            10,
            0.05,
            "the DELETE to wait for the batch's lock on its parent",
        )
        assert deleter.is_alive()
        result = loader.apply(batch, prepared)  # commits, then releases the locks
    finally:
        deleter.join(timeout=30)
    assert result.inserted == 10
    assert isinstance(outcome["error"], psycopg.errors.ForeignKeyViolation), outcome
    assert pg.execute("SELECT count(*) FROM users WHERE id = %s", (uid("u", 3),)).fetchone() == (1,)
    orphans = pg.execute(
        "SELECT count(*) FROM comments c WHERE NOT EXISTS "
        "(SELECT FROM users u WHERE u.id = c.user_id)"
    ).fetchone()
    assert orphans == (0,)


def test_the_parents_locks_block_neither_updates_nor_inserts_of_other_writers(
    pg: psycopg.Connection[Any], loader: BatchLoader, database_url: str
) -> None:
    """Other imports keep working during a load: a users import updating the locked parents'
    other columns, or adding users, does not wait for the comments batch."""
    batch = batch_of([comment(n, uid("a", 1), uid("u", 3)) for n in range(5)])
    prepared = loader.prepare(batch.valid)
    hold = prepared.hold.result() if prepared.hold else None
    assert hold is not None and hold.ok
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SET lock_timeout = '2s'")
        other.execute("UPDATE users SET name = 'renamed', role = 'editor' WHERE id = %s",
                      (uid("u", 3),))  # fmt: skip
        other.execute("UPDATE articles SET title = 'retitled' WHERE id = %s", (uid("a", 1),))
        other.execute(
            "INSERT INTO users (id, email, name, role, created_at) "
            "VALUES (%s, 'new@example.com', 'N', 'reader', now())",
            (uid("u", 77),),
        )
    assert loader.apply(batch, prepared).inserted == 5
    assert pg.execute("SELECT name FROM users WHERE id = %s", (uid("u", 3),)).fetchone() == (
        "renamed",
    )


def test_a_parent_deleted_before_the_lock_sends_the_batch_to_classification(
    pg: psycopg.Connection[Any], loader: BatchLoader, database_url: str
) -> None:
    batch = batch_of([comment(n, uid("a", 2), uid("u", n % 4 + 1)) for n in range(8)])
    pg.execute("DELETE FROM users WHERE id = %s", (uid("u", 4),))
    prepared = loader.prepare(batch.valid)
    assert prepared.hold is not None
    hold = prepared.hold.result()
    assert hold is not None and not hold.ok
    result = loader.apply(batch, prepared)
    assert (result.inserted, result.failed) == (6, 2)
    codes = pg.execute("SELECT field, code FROM job_errors ORDER BY row_no").fetchall()
    assert codes == [("user_id", "foreign_key")] * 2


def test_closing_the_locker_wakes_a_lock_waiting_for_a_connection(
    loader: BatchLoader, database_url: str
) -> None:
    direct = loader.prepare(batch_of([comment(1, uid("a", 1), uid("u", 1))]).valid).direct
    assert direct is not None
    loader.close()  # its own locker's hold goes; this test's locker has one connection
    locker = ReferenceLocker(lambda: connect_bulk(database_url), COMMENTS, size=1)
    first = locker.submit(direct)
    assert first.result(timeout=10) is not None  # holds the only connection
    second = locker.submit(direct)  # waits for it
    time.sleep(0.2)
    assert not second.done()
    started = time.monotonic()
    locker.close()
    assert time.monotonic() - started < 5
    assert second.result(timeout=1) is None


def test_locker_connections_are_named_and_bounded_by_the_idle_timeout(database_url: str) -> None:
    conn = connect_bulk(database_url, name="bulkio-locker", idle_ms=1234)
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT current_setting('application_name'), "
            "current_setting('idle_in_transaction_session_timeout')"
        )
        assert cur.fetchone() == ("bulkio-locker", "1234ms")
        cur.close()
    finally:
        conn.close()
