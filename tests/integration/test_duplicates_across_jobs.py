"""Within one file the first accepted record with a key wins, even when another job writes that
key between two of the file's batches (engine/imports/merge_sql.py: ``upsert``'s ``taken``).

A write modes' "already seen by this job" test reads ``last_import_job``; when another import job
overwrites such a row while the first one still runs, it records the keys it took over for that
job in ``job_keys`` (``id:<id>``, ``nk:<natural key>``), in the same transaction, and the first
job's later batches read them there. Two in-process loaders (jobs A and B) over users on a real
PostgreSQL, batches applied in a chosen interleaving.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from obstore.store import LocalStore

from engine.db import connect_bulk
from engine.formats.reader import read_batches
from engine.imports.load import BatchInput, BatchLoader
from engine.imports.validate import validate
from engine.resources import catalog
from engine.retention import cleanup
from engine.storage import Storage
from tests.support.database import empty, migrated_database
from tests.support.faults import FaultyConnection, faulty
from tests.support.servers import PostgresServer
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

USERS = catalog()["users"]


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server, "bulkio_dups")


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


def uid(tag: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, tag))


def user(tag: str | None, email: str, name: str) -> dict[str, str]:
    record = {"email": email, "name": name, "role": "reader", "created_at": "2024-05-01T12:00:00Z"}
    if tag is not None:
        record["id"] = uid(tag)
    return record


class Job:
    """One running users import whose file is ``batches`` (lists of records), applied batch by
    batch with :meth:`next`."""

    def __init__(
        self, pg: psycopg.Connection[Any], conn: Any, batches: list[list[dict[str, str]]]
    ) -> None:
        self.id = str(uuid.uuid4())
        pg.execute(
            "INSERT INTO jobs (id, kind, resource, format, mode, status, lease_owner, "
            "lease_expires) VALUES (%s, 'import', 'users', 'ndjson', 'upsert', 'running', 'w', "
            "now() + interval '1 hour')",
            (self.id,),
        )
        self.loader = BatchLoader(conn, USERS, self.id, "upsert", "w", 3600)
        self._batches = iter(_read(batches))

    def next(self) -> tuple[int, int, int]:
        """Apply the next batch: (inserted, updated, failed)."""
        out = self.loader.apply(next(self._batches))
        return out.inserted, out.updated, out.failed


def _read(batches: list[list[dict[str, str]]]) -> list[BatchInput]:
    """The batches as one NDJSON file (so row numbers run across them)."""
    records = [r for b in batches for r in b]
    data = b"".join(msgspec.json.encode(r) + b"\n" for r in records)
    sizes = {len(b) for b in batches}
    assert len(sizes) == 1, "batches of one size"
    out = []
    for batch in read_batches(
        [data],
        "ndjson",
        USERS.column_names,
        USERS.required_columns,
        batch_rows=sizes.pop(),
        max_record_bytes=1 << 20,
        max_decompressed_bytes=1 << 30,
    ):
        checked = validate(batch.frame, USERS)
        assert checked.errors.height == 0, checked.errors
        out.append(
            BatchInput(
                batch.index, batch.rows, checked.valid, batch.errors, batch.after, batch.bytes_end
            )
        )
    return out


def errors(pg: psycopg.Connection[Any], job: Job) -> list[tuple[Any, ...]]:
    return pg.execute(
        "SELECT row_no, field, code FROM job_errors WHERE job_id = %s ORDER BY row_no", (job.id,)
    ).fetchall()


def row(pg: psycopg.Connection[Any], tag: str) -> tuple[Any, ...] | None:
    return pg.execute(
        "SELECT email, name, last_import_job::text FROM users WHERE id = %s", (uid(tag),)
    ).fetchone()


def test_a_key_another_job_overwrote_is_still_a_duplicate_by_id(
    pg: psycopg.Connection[Any], bulk: Any
) -> None:
    a = Job(
        pg,
        bulk,
        [
            [user("x", "x@example.com", "A first"), user("w", "w@example.com", "W")],
            [user("x", "x@example.com", "A again"), user("z", "z@example.com", "Z")],
        ],
    )
    b = Job(pg, bulk, [[user("x", "x@example.com", "B")]])
    assert a.next() == (2, 0, 0)
    assert b.next() == (0, 1, 0)  # B overwrites X while A runs
    assert a.next() == (1, 0, 1)  # A's second X is a repeat, Z is new
    assert errors(pg, a) == [(3, "id", "duplicate_in_file")]
    assert row(pg, "x") == ("x@example.com", "B", b.id)
    assert errors(pg, b) == []


def test_a_natural_key_another_job_overwrote_is_still_a_duplicate(
    pg: psycopg.Connection[Any], bulk: Any
) -> None:
    a = Job(
        pg,
        bulk,
        [
            [user("x", "Ann@Example.com", "A first")],
            [user(None, "ANN@example.com", "A again")],  # matched by email, case-insensitively
        ],
    )
    b = Job(pg, bulk, [[user("x", "ann@example.com", "B")]])
    assert a.next() == (1, 0, 0)
    assert b.next() == (0, 1, 0)
    assert a.next() == (0, 0, 1)
    assert errors(pg, a) == [(2, "email", "duplicate_in_file")]
    assert row(pg, "x") == ("ann@example.com", "B", b.id)


def test_a_natural_key_another_job_moved_away_is_still_a_duplicate(
    pg: psycopg.Connection[Any], bulk: Any
) -> None:
    """B gives X another email: A's later record with X's first email (under a new id) repeats
    A's first record, though no row has that email any more."""
    a = Job(
        pg,
        bulk,
        [[user("x", "ann@example.com", "A first")], [user("y", "Ann@example.com", "A again")]],
    )
    b = Job(pg, bulk, [[user("x", "ann.b@example.com", "B")]])
    assert a.next() == (1, 0, 0)
    assert b.next() == (0, 1, 0)
    assert a.next() == (0, 0, 1)  # the direct COPY would have inserted Y: taken keys stop it
    assert errors(pg, a) == [(2, "email", "duplicate_in_file")]
    assert row(pg, "y") is None
    assert row(pg, "x") == ("ann.b@example.com", "B", b.id)


def test_keys_are_recorded_only_for_jobs_that_may_still_write(
    pg: psycopg.Connection[Any], bulk: Any
) -> None:
    done = Job(pg, bulk, [[user("x", "x@example.com", "done")]])
    running = Job(pg, bulk, [[user("y", "y@example.com", "running")]])
    assert done.next() == (1, 0, 0)
    assert running.next() == (1, 0, 0)
    pg.execute(
        "UPDATE jobs SET status = 'completed', finished_at = now() WHERE id = %s", (done.id,)
    )
    b = Job(pg, bulk, [[user("x", "x@example.com", "B"), user("y", "y@example.com", "B")]])
    assert b.next() == (0, 2, 0)
    keys = pg.execute("SELECT job_id::text, key FROM job_keys ORDER BY key").fetchall()
    assert keys == [(running.id, f"id:{uid('y')}"), (running.id, "nk:y@example.com")]


def test_a_row_rewritten_between_classification_and_upsert_is_classified_again(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str
) -> None:
    """Job C writes X after B's classification read it as A's: B's upsert leaves X alone,
    classifies again, and records X as taken over from C."""
    a = Job(pg, bulk, [[user("x", "x@example.com", "A")]])
    c = Job(pg, bulk, [[user("x", "x@example.com", "C")]])
    assert a.next() == (1, 0, 0)
    raced: list[str] = []

    def fault(event: str, conn: FaultyConnection) -> None:
        if event == "execute" and "INSERT INTO job_keys" in conn.sql and not raced:
            raced.append("C")  # B's upsert is next, after its classification
            assert c.next() == (0, 1, 0)

    conn = faulty(connect_bulk(database_url), USERS.table, fault)
    try:
        b = Job(pg, conn, [[user("x", "x@example.com", "B"), user("v", "v@example.com", "B")]])
        assert b.next() == (1, 1, 0)
    finally:
        conn.close()
    assert raced == ["C"]
    assert row(pg, "x") == ("x@example.com", "B", b.id)
    keys = pg.execute("SELECT key FROM job_keys WHERE job_id = %s ORDER BY key", (c.id,)).fetchall()
    assert keys == [(f"id:{uid('x')}",), ("nk:x@example.com",)]


def test_cleanup_deletes_the_job_keys_of_finished_jobs_at_once(
    pg: psycopg.Connection[Any], bulk: Any, tmp_path: Path
) -> None:
    """Taken-over keys (and validate_only's) matter only while their job runs: the next cleanup
    removes a finished job's, however recent, and keeps a running job's."""
    a = Job(pg, bulk, [[user("x", "x@example.com", "A")]])
    r = Job(pg, bulk, [[user("y", "y@example.com", "R")]])
    assert a.next() == (1, 0, 0) and r.next() == (1, 0, 0)
    b = Job(pg, bulk, [[user("x", "x@example.com", "B"), user("y", "y@example.com", "B")]])
    assert b.next() == (0, 2, 0)
    pg.execute("UPDATE jobs SET status = 'completed', finished_at = now() WHERE id = %s", (a.id,))
    pg.execute("INSERT INTO job_keys VALUES (%s, 'id:gone')", (str(uuid.uuid4()),))
    cleanup(pg, Storage(LocalStore(str(tmp_path)), "local"), timedelta(days=7))
    keys = pg.execute("SELECT DISTINCT job_id::text FROM job_keys").fetchall()
    assert keys == [(r.id,)]
    assert pg.execute("SELECT count(*) FROM jobs WHERE id = %s", (a.id,)).fetchone() == (1,)


def test_a_job_too_new_for_the_fast_upserts_snapshot_keeps_its_keys(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str
) -> None:
    """Job N writes X in a transaction B's fast upsert waits for, and N's job row appears only
    after that statement's snapshot: B must not overwrite X without recording it for N."""
    for tag in ("p", "q", "x"):
        pg.execute(
            "INSERT INTO users (id, email, name, role, created_at) "
            "VALUES (%s, %s, 'old', 'reader', now())",
            (uid(tag), f"{tag}@example.com"),
        )
    b = Job(
        pg,
        bulk,
        [[user(tag, f"{tag}@example.com", "B")] for tag in ("p", "q", "x")],
    )
    # Two batches of existing rows: the direct COPY and the plain INSERT miss twice and are
    # dropped, so the third batch starts with the fast upsert.
    assert b.next() == (0, 1, 0) and b.next() == (0, 1, 0)
    new_job = str(uuid.uuid4())
    outcome: list[tuple[int, int, int]] = []
    with psycopg.connect(database_url) as writer:  # job N's batch, not yet committed
        writer.execute(
            "UPDATE users SET name = 'N', last_import_job = %s WHERE id = %s", (new_job, uid("x"))
        )
        worker = threading.Thread(target=lambda: outcome.append(b.next()))
        worker.start()
        wait_until(
            lambda: (
                pg.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%%ON CONFLICT (id) DO UPDATE%%'"
                ).fetchone()
                == (1,)
            ),
            30,
            0.02,
            "the fast upsert to wait for job N's row",
        )
        pg.execute(
            "INSERT INTO jobs (id, kind, resource, format, mode, status, lease_owner, "
            "lease_expires) VALUES (%s, 'import', 'users', 'ndjson', 'upsert', 'running', 'n', "
            "now() + interval '1 hour')",
            (new_job,),
        )
        writer.commit()
        worker.join(timeout=30)
    assert outcome == [(0, 1, 0)]
    assert row(pg, "x") == ("x@example.com", "B", b.id)
    keys = pg.execute(
        "SELECT key FROM job_keys WHERE job_id = %s ORDER BY key", (new_job,)
    ).fetchall()
    assert keys == [(f"id:{uid('x')}",), ("nk:x@example.com",)]
