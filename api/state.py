"""What the API holds for its lifetime: settings, a PostgreSQL pool, storage, the doorbell and
the per-token limiters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
import redis
from litestar.datastructures import State
from psycopg_pool import ConnectionPool

from api.limits import Slots
from api.ratelimit import RateLimiter
from engine.queue import Doorbell
from engine.resources import Resource
from engine.settings import Settings
from engine.storage import Storage

T = TypeVar("T")


@dataclass(slots=True)
class AppState:
    settings: Settings
    pool: ConnectionPool
    storage: Storage
    doorbell: Doorbell
    catalog: dict[str, Resource]
    signing_secret: bytes
    redis: redis.Redis
    tokens: Any  # api.auth.TokenCache
    slots: Slots
    ratelimit: RateLimiter

    def sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, ...)`` on a pooled connection (call from a worker thread)."""
        with self.pool.connection() as conn:
            return fn(conn, *args, **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, ...)`` on a pooled connection in a thread (call from async code)."""
        return await anyio.to_thread.run_sync(lambda: self.sync(fn, *args, **kwargs))


def app_state(state: State) -> AppState:
    """The dependency every handler receives as ``app`` (registered in ``create_app``)."""
    app: AppState = state.app
    return app
