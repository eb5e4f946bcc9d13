"""Fault injection on real ADBC connections (no mock: every call reaches PostgreSQL).

:class:`FaultyConnection` wraps a live connection and runs the test's ``fault(event, conn)``
just before a COPY into a chosen table (event ``"copy"``), before each statement (``"execute"``,
its text in ``conn.sql``) and just before COMMIT (``"commit"``): the test can then end the
connection, change the schema or race another session at exactly that point of a transaction's
life. :func:`faulty_connect` opens such connections for a
``BatchLoader``'s ``connect``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.db import connect_bulk

__all__ = ["Fault", "FaultyConnection", "faulty", "faulty_connect"]

Fault = Callable[[str, "FaultyConnection"], None]


class FaultyConnection:
    """A real ADBC connection whose COPY into ``table`` and COMMIT first run ``fault``."""

    def __init__(self, conn: Any, pid: int, table: str, fault: Fault) -> None:
        self._conn = conn
        #: the server process, for pg_terminate_backend / pg_stat_activity
        self.pid = pid
        self.table = table
        #: the statement about to run, during an "execute" fault
        self.sql = ""
        self._fault = fault

    def cursor(self) -> Any:
        return _FaultyCursor(self._conn.cursor(), self)

    def commit(self) -> None:
        self._fault("commit", self)
        self._conn.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _FaultyCursor:
    def __init__(self, cur: Any, owner: FaultyConnection) -> None:
        self._cur = cur
        self._owner = owner

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._owner.sql = sql
        self._owner._fault("execute", self._owner)
        return self._cur.execute(sql, *args, **kwargs)

    def adbc_ingest(self, table: str, data: Any, **kwargs: Any) -> Any:
        if table == self._owner.table:
            self._owner._fault("copy", self._owner)
        return self._cur.adbc_ingest(table, data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def faulty(conn: Any, table: str, fault: Fault) -> FaultyConnection:
    """``conn`` (a live ADBC connection) running ``fault`` (see :class:`FaultyConnection`)."""
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = int(cur.fetchone()[0])
    cur.close()
    conn.rollback()
    return FaultyConnection(conn, pid, table, fault)


def faulty_connect(
    url: str, table: str, fault: Fault, idle_ms: int | None = None
) -> Callable[[], FaultyConnection]:
    """A ``connect`` for :class:`engine.imports.load.BatchLoader` whose connections run
    ``fault`` (see :class:`FaultyConnection`)."""

    def connect() -> FaultyConnection:
        return faulty(connect_bulk(url, name="bulkio-locker", idle_ms=idle_ms), table, fault)

    return connect
