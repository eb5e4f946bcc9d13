"""Pages of jobs, newest first, by keyset: the position after a page is its last job's
``(created_at, id)``, and the next page starts strictly below it (never OFFSET: page N costs what
page 1 costs, and jobs created meanwhile neither repeat nor skip an entry).

Every page is one index-only range scan (migration 0010): ``jobs_owner_list_idx`` /
``jobs_owner_status_list_idx`` for one owner, ``jobs_list_idx`` / ``jobs_status_list_idx`` across
owners, ``kind`` and ``resource`` checked on the index entries; then the page's rows by id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from engine.jobs import Job, from_row


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last job's creation time and id."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class JobFilter:
    #: None: every owner's jobs (admin tokens).
    owner: str | None = None
    #: None: both kinds; otherwise the kinds to show (a token may read only one).
    kinds: tuple[str, ...] | None = None
    resource: str | None = None
    status: str | None = None
    #: created_at >= created_after
    created_after: datetime | None = None
    #: created_at < created_before
    created_before: datetime | None = None


def where(flt: JobFilter, after: Position | None) -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword; ``true`` when empty) and its parameters."""
    terms: list[str] = []
    params: list[Any] = []
    if flt.owner is not None:
        terms.append("owner = %s")
        params.append(flt.owner)
    if flt.status is not None:
        terms.append("status = %s")
        params.append(flt.status)
    if flt.kinds is not None:
        terms.append("kind = ANY(%s)")
        params.append(list(flt.kinds))
    if flt.resource is not None:
        terms.append("resource = %s")
        params.append(flt.resource)
    if flt.created_after is not None:
        terms.append("created_at >= %s")
        params.append(flt.created_after)
    if flt.created_before is not None:
        terms.append("created_at < %s")
        params.append(flt.created_before)
    if after is not None:
        # A row comparison the index scans as one range (both columns DESC in the index).
        terms.append("(created_at, id) < (%s, %s)")
        params += [after.created_at, after.id]
    return " AND ".join(terms) or "true", params


def page_sql(flt: JobFilter, after: Position | None, limit: int) -> tuple[str, list[Any]]:
    """The page's ids from an index-only scan (every filtered column is in the list indexes),
    then those rows alone by primary key; the nested loop keeps the order (no sort)."""
    clause, params = where(flt, after)
    sql = (
        "SELECT j.* FROM (SELECT id, created_at FROM jobs WHERE "
        f"{clause} ORDER BY created_at DESC, id DESC LIMIT %s) AS p "
        "JOIN jobs AS j ON j.id = p.id ORDER BY p.created_at DESC, p.id DESC"
    )
    return sql, [*params, limit]


def page(
    conn: psycopg.Connection[Any], flt: JobFilter, after: Position | None, limit: int
) -> tuple[list[Job], Position | None]:
    """Up to ``limit`` jobs below ``after`` (None: from the newest), and the position to ask the
    next page from (None: this was the last page). Reads ``limit + 1`` rows at most."""
    sql, params = page_sql(flt, after, limit + 1)
    with conn.cursor(row_factory=dict_row) as cur:
        # Never a prepared statement: after a few runs PostgreSQL may switch one to a generic plan,
        # which does not know the owner, the status or the LIMIT and may sort instead of walking
        # the index. Planned with its values each time, the page is one short index scan.
        cur.execute(sql, params, prepare=False)
        rows = cur.fetchall()
    found = [from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = found[-1] if found and more else None
    return found, Position(last.created_at, uuid.UUID(last.id)) if last else None
