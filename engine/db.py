"""Connections and migrations.

ADBC (binary COPY, Arrow batches) carries bulk data; psycopg carries small statements.
Opening an ADBC connection costs ~0.15 s, so workers open one and reuse it for every batch.
"""

from __future__ import annotations

from importlib import resources as pkg_resources
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import psycopg

#: Arbitrary key of the advisory lock that serialises concurrent `bulkio migrate` runs.
MIGRATION_LOCK = 0x62756C6B


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=autocommit)


def connect_bulk(url: str) -> adbc.Connection:
    """An ADBC connection (not autocommit): COPY, merge and checkpoint share its transaction."""
    return adbc.connect(url)


def migrations() -> list[tuple[str, str]]:
    folder = pkg_resources.files("engine") / "migrations"
    found = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in found]


def migrate(url: str) -> list[str]:
    """Apply pending migrations in order; safe to run from several processes at once."""
    applied: list[str] = []
    with connect(url, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            conn.execute(sql.encode())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
        conn.commit()
    return applied
