"""Per-token limits as the API applies them: body sizes, the slots of uploads and streams
(engine/limits.py), renewed by one thread per API process, and refusals as 429 problems.

A slot is released when its request ends (also when the client goes away: the upload's ``finally``
or the stream's release callback); if the API process dies instead, nothing renews its slots and
they stop counting after ``BULKIO_SLOT_TTL_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from psycopg_pool import ConnectionPool

from api.problems import Problem
from engine import limits
from engine.auth import Principal
from engine.jobs import Job
from engine.settings import Settings

log = logging.getLogger("bulkio.api")

#: Largest request body of a route that does not say otherwise (none of them reads one).
DEFAULT_BODY_BYTES = 64 * 1024
#: Largest JSON request body (``POST /v1/exports``: room for ~25,000 ids in a filter).
JSON_BODY_BYTES = 1024 * 1024
#: Retry-After (seconds) of a 429 for a job, upload or stream limit: a polling hint.
RETRY_AFTER_SECONDS = 5


def check_body_size(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """413 for a body whose announced length passes the route's limit, also on routes that do
    not read a body (Litestar checks only the bodies it reads)."""
    if not isinstance(handler, HTTPRouteHandler):
        return
    limit = handler.resolve_request_max_body_size()
    length = connection.headers.get("content-length", "")
    if limit is not None and length.isdigit() and int(length) > limit:
        raise Problem(413, f"the request body is larger than this route accepts ({limit} bytes)")


def too_many(exc: limits.LimitReached) -> Problem:
    return Problem(
        429, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}, limit=exc.limit
    )


class Slots:
    """Takes, renews and releases this process's upload and stream slots."""

    def __init__(self, pool: ConnectionPool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._ttl = max(settings.slot_ttl_seconds, 1)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="slot-renewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def job_limit(self, principal: Principal) -> int:
        return principal.max_running_jobs or self._settings.max_running_jobs

    def _take(self, principal: Principal, kind: str, cap: int, job_limit: int | None) -> str:
        try:
            with self._pool.connection() as conn:
                slot = limits.take(
                    conn,
                    principal.token_id,
                    kind,
                    cap=cap,
                    ttl_seconds=self._ttl,
                    job_limit=job_limit,
                )
        except limits.LimitReached as exc:
            raise too_many(exc) from exc
        with self._lock:
            self._held.add(slot)
        return slot

    def take_stream(self, principal: Principal) -> str:
        """A stream slot, or a 429 problem (blocks: call in a thread)."""
        return self._take(principal, limits.STREAM, self._settings.max_concurrent_streams, None)

    def release(self, slot: str) -> None:
        """Give ``slot`` back (blocks). Should PostgreSQL fail here, the slot expires by itself."""
        with self._lock:
            self._held.discard(slot)
        try:
            with self._pool.connection() as conn:
                limits.release(conn, slot)
        except Exception:  # the slot expires after the TTL: log and go on
            log.warning("could not release a slot; it expires by itself", exc_info=True)

    @asynccontextmanager
    async def upload(self, principal: Principal, *, jobs: bool = True) -> AsyncIterator[str]:
        """Hold an upload slot (within the token's job limit too, unless not ``jobs``: bytes of
        an upload session, which becomes a job only when imported) for the ``async with``
        body."""
        cap = self._settings.max_concurrent_uploads
        job_limit = self.job_limit(principal) if jobs else None
        slot = await anyio.to_thread.run_sync(self._take, principal, limits.UPLOAD, cap, job_limit)
        try:
            yield slot
        finally:
            with anyio.CancelScope(shield=True):  # also when the client went away
                await anyio.to_thread.run_sync(self.release, slot)

    def create_job(self, principal: Principal, slot: str | None, **fields: Any) -> Job:
        """Create a job within the token's job limit, or a 429 problem (blocks)."""
        try:
            with self._pool.connection() as conn:
                job = limits.create_job(
                    conn,
                    token_id=principal.token_id,
                    job_limit=self.job_limit(principal),
                    slot=slot,
                    **fields,
                )
        except limits.LimitReached as exc:
            raise too_many(exc) from exc
        if slot is not None:
            with self._lock:
                self._held.discard(slot)
        return job

    def _renew(self) -> None:
        interval = self._ttl / 3
        while not self._stop.wait(interval):
            with self._lock:
                held = list(self._held)
            try:
                with self._pool.connection(timeout=interval) as conn:
                    limits.renew(conn, held, self._ttl)
            except Exception:  # retried at the next tick; slots expire only after the TTL
                log.warning("could not renew %d upload/stream slots", len(held), exc_info=True)
