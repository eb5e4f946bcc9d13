"""No committed comment ever lacks its parent, whatever happens to the locker's connections.

With set-based reference checks a clean batch is COPYed without FK triggers while its parents are
locked ``FOR KEY SHARE`` (engine/imports/references.py). These tests end the connection holding
a batch's locks at each point of that batch's life — right after locking, by the server's
idle-in-transaction timeout while the writer is slow, just before the COPY, during the COPY and
just before COMMIT — and at once delete a parent that only that batch references (the DELETE
must then succeed: the locks are gone). Meanwhile another session keeps trying to delete the
round's other parents. Expected every time: 0 orphans, and an exact outcome — every record is
either stored or reported as ``foreign_key`` against a parent that no longer exists, and the
job's counters agree.

``ROUNDS_PER_POINT`` rounds (of 3 batches of 20 comments) for each of the 5 points: 40 rounds.
The batches go through :class:`engine.imports.load.BatchLoader` in-process, pipelined like the
worker (batch N+1 is locked while batch N is written), on real PostgreSQL connections; the
locker's connections are real ADBC connections wrapped only to run the fault at the chosen point
(``faults.py``).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import pytest

from engine.db import connect_bulk
from engine.formats.reader import read_batches
from engine.imports.load import BatchInput, BatchLoader
from engine.imports.validate import validate
from engine.resources import catalog
from tests.support.database import empty, migrated_database
from tests.support.faults import FaultyConnection, faulty_connect
from tests.support.servers import PostgresServer
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

COMMENTS = catalog()["comments"]
POINTS = ["after-lock", "idle-timeout", "before-copy", "during-copy", "before-commit"]
ROUNDS_PER_POINT = 8
BATCHES, BATCH_ROWS = 3, 20
#: The locker's idle-in-transaction timeout in the idle-timeout rounds.
IDLE_MS = 300


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server, "bulkio_orphans")


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


def uid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


@dataclass
class Round:
    """One round's parents: ``victim`` is referenced by the middle batch only, and deleted when
    its locks are gone; the background deleter may delete :meth:`deletable` ones at any moment;
    the others stay."""

    n: int
    author: str
    safe: str
    victim: str
    articles: list[str]
    users: list[str]
    fired: list[str] = field(default_factory=list)
    victim_deleted: bool = False
    error: BaseException | None = None

    @classmethod
    def seed(cls, pg: psycopg.Connection[Any], n: int) -> Round:
        users = [uid(n, "u", i) for i in range(5)]
        articles = [uid(n, "a", i) for i in range(5)]
        for i, user in enumerate(users):
            pg.execute(
                "INSERT INTO users (id, email, name, role, created_at) "
                "VALUES (%s, %s, 'U', 'reader', now())",
                (user, f"r{n}u{i}@example.com"),
            )
        for i, article in enumerate(articles):
            pg.execute(
                "INSERT INTO articles (id, slug, title, body, author_id, status, created_at) "
                "VALUES (%s, %s, 'T', 'B', %s, 'draft', now())",
                (article, f"r{n}-a-{i}", users[0]),
            )
        return cls(n, users[0], articles[0], articles[1], articles, users)

    def records(self) -> list[dict[str, str]]:
        out = []
        for i in range(BATCHES * BATCH_ROWS):
            # The middle batch references the victim and parents never deleted (so that its
            # locks are always taken and the fault always happens); the others may lose theirs.
            middle = i // BATCH_ROWS == 1
            others = [self.safe, self.articles[2]] if middle else self.articles[2:]
            article = self.victim if middle and i % 3 == 0 else others[i % len(others)]
            user = self.users[i % 3] if middle else self.users[i % 5]
            out.append(
                {
                    "id": uid(self.n, "c", i),
                    "article_id": article,
                    "user_id": user,
                    "body": f"comment {i}",
                    "created_at": "2024-05-01T12:00:00Z",
                }
            )
        return out

    def deletable(self) -> list[tuple[str, str]]:
        return [("articles", a) for a in self.articles[3:]] + [("users", u) for u in self.users[3:]]


def batches_of(records: list[dict[str, str]]) -> list[BatchInput]:
    """The records as one NDJSON file read in batches of BATCH_ROWS (row numbers = positions)."""
    data = b"".join(msgspec.json.encode(r) + b"\n" for r in records)
    out = []
    for batch in read_batches(
        [data],
        "ndjson",
        COMMENTS.column_names,
        COMMENTS.required_columns,
        batch_rows=BATCH_ROWS,
        max_record_bytes=1 << 20,
        max_decompressed_bytes=1 << 30,
    ):
        checked = validate(batch.frame, COMMENTS)
        assert checked.errors.height == 0, checked.errors
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


def delete(database_url: str, table: str, row_id: str, lock_timeout: str) -> bool:
    """Delete one parent in a session of its own; False if its FK check or a lock stopped it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"SET lock_timeout = '{lock_timeout}'")
        try:
            return conn.execute(f"DELETE FROM {table} WHERE id = %s", (row_id,)).rowcount == 1
        except (psycopg.errors.ForeignKeyViolation, psycopg.errors.LockNotAvailable):
            return False
        except psycopg.errors.DeadlockDetected:
            return False


def run_round(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str, n: int, point: str
) -> tuple[Round, str]:
    """Load one round's 3 batches with the fault at ``point`` in the middle batch."""
    parents = Round.seed(pg, n)
    records = parents.records()
    batches = batches_of(records)
    job = start_job(pg)
    armed = threading.Event()  # the fault fires once, in the middle batch's write

    def kill_and_delete(conn: FaultyConnection) -> None:
        pg.execute("SELECT pg_terminate_backend(%s)", (conn.pid,))
        parents.victim_deleted = delete(database_url, "articles", parents.victim, "10s")

    def fault(event: str, conn: FaultyConnection) -> None:
        wanted = {"before-copy": "copy", "during-copy": "copy", "before-commit": "commit"}
        if not armed.is_set() or wanted.get(point) != event:
            return
        armed.clear()
        parents.fired.append(point)
        if point != "during-copy":
            kill_and_delete(conn)
            return
        # Make the COPY wait on a uniqueness check, end its connection while it waits.
        blocker = psycopg.connect(database_url)
        blocker.execute(
            "INSERT INTO comments (id, article_id, user_id, body, created_at) "
            "VALUES (%s, %s, %s, 'blocker', now())",
            (records[BATCH_ROWS]["id"], parents.safe, parents.author),
        )

        def end_it() -> None:
            try:
                wait_until(
                    lambda: (
                        pg.execute(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE pid = %s AND wait_event_type = 'Lock'",
                            (conn.pid,),
                        ).fetchone()
                        == (1,)
                    ),
                    20,
                    0.01,
                    "the COPY to wait",
                )
                with psycopg.connect(database_url, autocommit=True) as other:
                    other.execute("SELECT pg_terminate_backend(%s)", (conn.pid,))
                parents.victim_deleted = delete(database_url, "articles", parents.victim, "10s")
            finally:
                blocker.rollback()
                blocker.close()

        threading.Thread(target=end_it, daemon=True).start()

    idle_ms = IDLE_MS if point == "idle-timeout" else None
    connect = faulty_connect(database_url, COMMENTS.table, fault, idle_ms)
    stop = threading.Event()

    def deleter() -> None:
        rng = random.Random(n)
        while not stop.is_set():
            table, row_id = rng.choice(parents.deletable())
            delete(database_url, table, row_id, "20ms")
            stop.wait(0.005)

    loader = BatchLoader(bulk, COMMENTS, job, "upsert", "w", 3600, connect=connect)
    background = threading.Thread(target=deleter, daemon=True)
    background.start()
    try:
        assert loader._locker is not None, "set-based checks are not in use"
        prepared = [loader.prepare(batches[0].valid), loader.prepare(batches[1].valid)]
        loader.apply(batches[0], prepared[0])
        prepared.append(loader.prepare(batches[2].valid))  # batch 2 locked while 1 is written
        middle = prepared[1]
        assert middle.hold is not None
        hold = middle.hold.result(timeout=30)
        if point in ("after-lock", "idle-timeout") and hold is not None and hold.conn is not None:
            parents.fired.append(point)
            conn = hold.conn
            if point == "idle-timeout":  # a slow writer: the server ends the idle transaction
                wait_until(
                    lambda: (
                        pg.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (conn.pid,)
                        ).fetchone()
                        == (0,)
                    ),
                    20,
                    0.01,
                    "the idle-in-transaction timeout",
                )
                parents.victim_deleted = delete(database_url, "articles", parents.victim, "10s")
            else:
                kill_and_delete(conn)
        armed.set()
        try:
            loader.apply(batches[1], middle)
            armed.clear()
            loader.apply(batches[2], prepared[2])
        except Exception as exc:  # reported after the orphan check
            parents.error = exc
    finally:
        stop.set()
        background.join(timeout=10)
        loader.close()
    return parents, job


def check_round(pg: psycopg.Connection[Any], parents: Round, job: str) -> None:
    records = parents.records()
    ids = [r["id"] for r in records]
    stored = {
        r[0] for r in pg.execute("SELECT id FROM comments WHERE id = ANY(%s)", (ids,)).fetchall()
    }
    existing = {
        str(r[0])
        for r in pg.execute("SELECT id FROM articles UNION ALL SELECT id FROM users").fetchall()
    }
    reported: dict[int, list[tuple[str, str, str]]] = {}
    for row_no, fld, code, value in pg.execute(
        "SELECT row_no, field, code, value FROM job_errors WHERE job_id = %s", (job,)
    ).fetchall():
        reported.setdefault(int(row_no), []).append((fld, code, value))
    for row_no, record in enumerate(records, start=1):
        if record["id"] in stored:
            assert row_no not in reported, (row_no, reported[row_no])
            assert record["article_id"] in existing and record["user_id"] in existing
            continue
        errors = reported.get(row_no)
        assert errors, f"row {row_no} was neither stored nor reported"
        for fld, code, value in errors:
            assert code == "foreign_key" and value == record[fld], errors
            assert value not in existing, f"row {row_no} reported, but {value} exists"
    counters = pg.execute(
        "SELECT processed, successful, failed, next_batch FROM jobs WHERE id = %s", (job,)
    ).fetchone()
    assert counters == (len(records), len(stored), len(reported), BATCHES)


ORPHANS = """
SELECT count(*) FROM comments c
LEFT JOIN articles a ON a.id = c.article_id LEFT JOIN users u ON u.id = c.user_id
WHERE a.id IS NULL OR u.id IS NULL
"""


@pytest.mark.parametrize("point", POINTS)
def test_a_lost_locker_connection_never_lets_an_orphan_commit(
    pg: psycopg.Connection[Any], bulk: Any, database_url: str, point: str
) -> None:
    for n in range(ROUNDS_PER_POINT):
        parents, job = run_round(pg, bulk, database_url, n, point)
        assert parents.fired == [point], "the fault did not happen where it was meant to"
        assert parents.victim_deleted, "the victim's DELETE did not pass: its locks were held"
        assert pg.execute(ORPHANS).fetchone() == (0,), f"orphans after round {n} ({point})"
        assert parents.error is None, repr(parents.error)
        check_round(pg, parents, job)
        # The rows that referenced the victim were reported, not stored.
        assert pg.execute(
            "SELECT count(*) FROM comments WHERE article_id = %s", (parents.victim,)
        ).fetchone() == (0,)
