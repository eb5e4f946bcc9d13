"""Wake-ups for the event streams of one API process, from one ``LISTEN`` connection.

PostgreSQL stays the store of job events (engine/events.py); NOTIFY only says "job X has new
events". One connection per API process listens; each open stream registers an
:class:`asyncio.Event` for its job and reads the table when it is set, never on a timer. A stream
holds no database connection while it waits: it borrows one from the pool only to read a page.

The listening connection is reopened (with backoff) when it breaks; every stream is then woken
once, since notifications sent while nobody listened are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager

import psycopg
from litestar import Litestar
from psycopg.conninfo import make_conninfo

from engine import db, metrics
from engine.events import CHANNEL
from engine.settings import Settings

log = logging.getLogger("bulkio.api")

#: ``application_name`` of the listening connection (pg_stat_activity).
LISTEN_CONNECTION = "bulkio-api-events"
#: Streams one API process serves at once; more get 503 (each holds an HTTP connection).
MAX_STREAMS = 1000
#: Backoff between attempts to reopen the listening connection, doubling up to the maximum.
RECONNECT_SECONDS = (0.5, 30.0)
#: The listening connection only reads: TCP keepalives tell a silently dropped one from a quiet
#: one (about a minute), so it is reopened instead of waiting for ever.
CONNECT_OPTIONS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class EventHub:
    def __init__(self, conninfo: str, max_streams: int = MAX_STREAMS) -> None:
        self._conninfo = make_conninfo(conninfo, **CONNECT_OPTIONS)
        self._max = max_streams
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        #: Set while the LISTEN is in place (tests and health checks may wait for it).
        self.listening = asyncio.Event()

    @property
    def streams(self) -> int:
        return self._count

    @property
    def full(self) -> bool:
        """Whether this process already serves ``max_streams`` streams (new ones get 503)."""
        return self._count >= self._max

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="event-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An Event set whenever the job may have new events; released on exit."""
        wake = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(wake)
        self._count += 1
        metrics.event_streams(1)
        try:
            yield wake
        finally:
            self._count -= 1
            metrics.event_streams(-1)
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(wake)
                if not waiting:
                    del self._waiters[job_id]

    def wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def wake_all(self) -> None:
        for waiting in self._waiters.values():
            for event in waiting:
                event.set()

    async def _listen(self) -> None:
        delay, longest = RECONNECT_SECONDS
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = RECONNECT_SECONDS[0]
                    self.wake_all()  # whatever was notified while nobody listened
                    async for note in conn.notifies():
                        self.wake(note.payload)
            except psycopg.Error as exc:
                log.warning(
                    "job events: the LISTEN connection failed; reconnecting",
                    extra={"error": str(exc), "retry_in": delay},
                )
            self.listening.clear()
            self.wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)


def hub_lifespan(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app's lifespan part that runs the hub (``app.state.event_hub``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        hub = EventHub(db.conninfo(settings.database_url, LISTEN_CONNECTION))
        hub.start()
        app.state.event_hub = hub
        try:
            yield
        finally:
            await hub.close()

    return lifespan
