"""The test database: a migrated database on the session's PostgreSQL, and the one fixture that
hands a test a connection to it.

``database_url`` (per session) is the database of the integration tests' service; ``db`` is an
autocommit connection to it. A test module that needs a database of its own (no service's worker
or reconciler may touch its jobs, or it changes the schema) overrides ``database_url`` for the
module and keeps using ``db``::

    @pytest.fixture(scope="module")
    def database_url(pg_server: PostgresServer) -> Iterator[str]:
        yield from migrated_database(pg_server, "bulkio_orphans")

Such a module cannot also use the session's ``service`` (built on the session's database_url:
pytest reports a scope mismatch); a module that needs both makes its second database with
:func:`migrated_database` under another fixture name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engine.db import migrate
from tests.support.servers import PostgresServer

__all__ = ["TABLES", "database_url", "db", "empty", "migrated_database"]

#: The tables a test's data lands in, emptied before each test (parents last: CASCADE anyway).
TABLES = "comments, articles, users, job_errors, job_keys, idempotency_keys, jobs"


def migrated_database(server: PostgresServer, name: str | None = None) -> Iterator[str]:
    """A new database with bulkio's schema (``engine.db.migrate``): yields its URL, then drops
    it. ``name`` defaults to a unique one."""
    url = server.create_database(name)
    migrate(url)
    yield url
    server.drop_database(url.rsplit("/", 1)[1])


def empty(conn: psycopg.Connection[Any], tables: str = TABLES) -> None:
    """TRUNCATE ``tables`` (and whatever references them)."""
    conn.execute(f"TRUNCATE {tables} CASCADE".encode())


@pytest.fixture(scope="session")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """The migrated database of the session's service (a module may override it: see above)."""
    yield from migrated_database(pg_server, "bulkio_it")


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to ``database_url``."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
