"""Expiry: upload sessions not imported by their ``expires_at`` are removed with their bytes,
and bytes under ``uploads/`` that no session owns are swept (engine/retention.py runs it)."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from typing import Any

import obstore
import psycopg
from psycopg.rows import dict_row

from engine.storage import Storage
from engine.uploads.sessions import KINDS, PREFIX, delete_bytes, multipart_of, valid_id

#: Expired uploads handled per round.
EXPIRE_CHUNK = 200


def expire(conn: psycopg.Connection[Any], storage: Storage, now: datetime | None = None) -> int:
    """Remove uploads not imported by their ``expires_at`` (``now``: the database's clock
    unless given), bytes first (S3: the multipart upload aborted, or the object deleted; local:
    the file), then their rows; then bytes under ``uploads/`` that no row owns (a multipart
    upload whose row is gone, or not the row's own). ``conn``: autocommit. The number of uploads
    removed."""
    if storage.kind not in KINDS:
        return 0
    removed = 0
    while True:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "WITH t AS (SELECT coalesce(%s::timestamptz, now()) AS now) "
                "SELECT id::text, storage, object_key, s3_upload_id FROM uploads, t "
                "WHERE job_id IS NULL AND expires_at < t.now "
                "AND NOT (status = 'completing' AND lease_expires > t.now) "
                "ORDER BY expires_at LIMIT %s",
                (now, EXPIRE_CHUNK),
            )
            rows = cur.fetchall()
        if not rows:
            break
        for row in rows:
            delete_bytes(storage, row)
        removed += conn.execute(
            "DELETE FROM uploads WHERE id = ANY(%s::uuid[]) AND job_id IS NULL",
            ([r["id"] for r in rows],),
        ).rowcount
    _sweep_unowned(conn, storage)
    return removed


def _rows(conn: psycopg.Connection[Any], ids: list[str]) -> dict[str, str | None]:
    """id -> s3_upload_id of the uploads among ``ids`` that exist."""
    found: dict[str, str | None] = {}
    for start in range(0, len(ids), 1000):
        chunk = sorted({i for i in ids[start : start + 1000] if valid_id(i)})
        for upload_id, multipart_id in conn.execute(
            "SELECT id::text, s3_upload_id FROM uploads WHERE id = ANY(%s::uuid[])", (chunk,)
        ).fetchall():
            found[upload_id] = multipart_id
    return found


def _sweep_unowned(conn: psycopg.Connection[Any], storage: Storage) -> None:
    if storage.kind == "s3":
        multipart = multipart_of(storage)
        pending = list(multipart.uploads(f"{PREFIX}/"))
        rows = _rows(conn, [_upload_of(path) for path, _ in pending])
        for path, multipart_id in pending:
            owner_id = _upload_of(path)
            # A row whose multipart upload is not created yet (NULL) may be about to own it.
            if owner_id not in rows or rows[owner_id] not in (None, multipart_id):
                multipart.abort(path, multipart_id)
    for batch in obstore.list(storage.store, prefix=f"{PREFIX}/"):
        paths = [meta["path"] for meta in batch]
        rows = _rows(conn, [_upload_of(p) for p in paths])
        for path in paths:
            if _upload_of(path) not in rows:
                storage.delete(path)
                if storage.kind == "local":
                    with contextlib.suppress(OSError):
                        storage.local_path(path).parent.rmdir()
    if storage.kind == "local":
        _remove_empty_dirs(conn, storage)


def _remove_empty_dirs(conn: psycopg.Connection[Any], storage: Storage) -> None:
    """A local store keeps the emptied directory of an upload whose job retention deleted (and
    so its object and row): remove the empty ones no row owns (best effort)."""
    try:
        names = [e.name for e in os.scandir(storage.local_path(PREFIX)) if e.is_dir()]
    except FileNotFoundError:
        return
    rows = _rows(conn, names)
    for name in names:
        if name not in rows:
            with contextlib.suppress(OSError):  # not empty, or gone meanwhile
                os.rmdir(storage.local_path(f"{PREFIX}/{name}"))


def _upload_of(path: str) -> str:
    """The upload id in an object path ``uploads/<id>/...`` ("" for any other path)."""
    parts = path.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == PREFIX else ""
