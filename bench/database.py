"""The benchmark database: PostgreSQL with production-like durable settings, the bulkio schema,
table preparation between runs, and the ``psql \\copy`` baselines.

Baselines and bulkio run against the same server, database and tables (``engine.db.migrate``),
each into an empty table whose parents hold the same rows.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from inputs import DataFile

from engine.db import migrate
from tests.support.servers import PostgresServer

#: The bulk-load settings of ``.ci/services.sh`` (the `make run` server), durability included:
#: fsync, synchronous_commit and full_page_writes on. ``jit`` is left at PostgreSQL's default
#: as there (the test servers of tests/support/servers.py turn it off).
BENCH_PG_SETTINGS: Mapping[str, str] = {
    "max_connections": "100",
    "shared_buffers": "2GB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "jit": "on",
}

#: Tables that reference each table (TRUNCATE … CASCADE empties them too).
PARENTS = {"users": (), "articles": ("users",), "comments": ("users", "articles")}


class BenchDatabase:
    """One database on the benchmark server, migrated by ``engine.db.migrate``."""

    def __init__(self, server: PostgresServer, name: str = "bulkio_bench") -> None:
        self.server = server
        self.name = name
        self.url = server.create_database(name)
        migrate(self.url)
        self.psql = str(server.bindir / "psql")

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description else []

    def count(self, table: str) -> int:
        return int(self.execute(f"SELECT count(*) FROM {table}")[0][0])

    def settings(self) -> dict[str, str]:
        names = ", ".join(f"'{k}'" for k in BENCH_PG_SETTINGS)
        rows = self.execute(f"SELECT name, setting, unit FROM pg_settings WHERE name IN ({names})")
        return {
            name: f"{setting}{'' if unit is None else ' ' + unit}" for name, setting, unit in rows
        }

    def version(self) -> str:
        return str(self.execute("SHOW server_version")[0][0])

    # ------------------------------------------------------------------------ table states

    def empty(self, table: str) -> None:
        """TRUNCATE ``table`` and every table referencing it (their rows are meaningless then)."""
        self.execute(f"TRUNCATE {table} CASCADE")

    def ensure_loaded(self, data: DataFile) -> None:
        """``data``'s table holds exactly its rows (loaded untimed by \\copy if it does not)."""
        if self.count(data.resource) != data.valid:
            self.empty(data.resource)
            self.copy_in(data)
            if self.count(data.resource) != data.valid:
                raise AssertionError(f"\\copy of {data.path.name} did not load {data.valid} rows")

    def settle(self, tables: tuple[str, ...] = ()) -> None:
        """Same starting point for every measured run: ``tables`` vacuumed and analysed (hint
        bits set, statistics current), then a CHECKPOINT so no earlier run's dirty pages are
        written during the next one."""
        for table in tables:
            self.execute(f"VACUUM (ANALYZE) {table}")
        self.execute("CHECKPOINT")

    # ---------------------------------------------------------------------------- baselines

    def _run_psql(self, command: str, stdout: Any = subprocess.DEVNULL) -> None:
        argv = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.server.host,
                "-p", str(self.server.port), "-U", self.server.superuser, "-d", self.name,
                "-c", command]  # fmt: skip
        done = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True,
                              timeout=3600)  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"psql {command!r} failed ({done.returncode}): {done.stderr}")

    def copy_in(self, data: DataFile, table: str | None = None) -> float:
        """``\\copy <table> (<header columns>) FROM <file> (FORMAT csv, HEADER)``; seconds.
        ``table`` defaults to the file's resource."""
        if data.format != "plain":
            raise ValueError("\\copy loads the --plain-csv files")
        with open(data.path, encoding="utf-8") as f:
            columns = f.readline().strip()
        path = str(data.path).replace("'", "''")
        started = time.perf_counter()
        self._run_psql(
            f"\\copy {table or data.resource} ({columns}) FROM '{path}' "
            "WITH (FORMAT csv, HEADER true)"
        )
        return time.perf_counter() - started

    def copy_out(self, query: str, out: Path) -> float:
        """``\\copy (<query>) TO STDOUT (FORMAT csv, HEADER)`` into ``out``; seconds."""
        started = time.perf_counter()
        with open(out, "wb") as fh:
            self._run_psql(f"\\copy ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)", fh)
        return time.perf_counter() - started


def start_server(base_dir: Path | None = None) -> PostgresServer:
    return PostgresServer(settings=BENCH_PG_SETTINGS, base_dir=base_dir).start()
