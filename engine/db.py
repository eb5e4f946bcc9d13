"""Connections and migrations.

ADBC (binary COPY, Arrow batches) carries bulk data; psycopg carries small statements.
Opening an ADBC connection costs ~0.15 s, so workers open one and reuse it for every batch.
"""

from __future__ import annotations

import os
from importlib import resources as pkg_resources
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: Arbitrary key of the advisory lock that serialises concurrent `bulkio migrate` runs.
MIGRATION_LOCK = 0x62756C6B


def conninfo(url: str, name: str, idle_in_transaction_ms: int | None = None) -> str:
    """``url`` as a libpq conninfo that names the connection (``application_name``, seen in
    ``pg_stat_activity`` and the server log) unless the URL or ``PGAPPNAME`` names it already,
    and, if given, lets the server end a transaction left idle for ``idle_in_transaction_ms``.
    Options already in ``url`` are kept."""
    params = conninfo_to_dict(url)
    # An operator's choice wins: in the URL, or libpq's own PGAPPNAME.
    chosen = params.get("application_name") or os.environ.get("PGAPPNAME") or name
    extra: dict[str, Any] = {"application_name": chosen}
    if idle_in_transaction_ms is not None:
        setting = f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_ms)}"
        extra["options"] = f"{params.get('options') or ''} {setting}".strip()
    return make_conninfo(url, **extra)


def idle_in_transaction_ms(lease_seconds: int) -> int:
    """Half the lease: a worker that stalls inside a transaction (frozen, partitioned) has it
    ended by the server before its lease runs out, so its locks on the rows it wrote, on the
    job row, on parent rows (reference locks) or on the reconciler's advisory lock cannot keep
    the job from the next worker."""
    return max(lease_seconds * 500, 1000)


def connect(
    url: str, *, autocommit: bool = True, name: str = "bulkio", idle_ms: int | None = None
) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo(url, name, idle_ms), autocommit=autocommit)


def connect_bulk(url: str, *, name: str = "bulkio", idle_ms: int | None = None) -> adbc.Connection:
    """An ADBC connection (not autocommit): COPY, merge and checkpoint share its transaction."""
    return adbc.connect(conninfo(url, name, idle_ms))


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
