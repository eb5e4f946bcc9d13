"""Requests per minute per API token, counted in Redis, with the rate-limit headers of the IETF
draft (``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``) on every answer of a
limited route and ``Retry-After`` on its 429.

The window is a fixed minute shared by every API process (one ``INCR`` per request). When Redis
cannot be reached the limiter *fails open*: the request goes through unchecked, is counted in
``bulkio_rate_limit_unavailable_total``, a warning is logged (at most once per
:data:`PAUSE_SECONDS`), and Redis is not asked again for :data:`PAUSE_SECONDS` (a hung Redis would
otherwise add its socket timeout to every request). Why open: Redis is the queue's doorbell, not
a source of truth (a job waits in PostgreSQL until the reconciler enqueues it), so a Redis restart
must not take the whole API down; the limits that bound expensive work (queued and running jobs,
concurrent uploads and streams, body sizes) live in PostgreSQL or the process and still hold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis
from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from engine import metrics

log = logging.getLogger("bulkio.api")

#: Length of the fixed window, in seconds.
WINDOW_SECONDS = 60
#: After a Redis failure, requests skip the limiter this long before Redis is tried again.
PAUSE_SECONDS = 5.0
#: Key of the connection state that carries this request's rate-limit headers.
STATE_KEY = "bulkio_rate_headers"
#: Stable name of this limit in a 429 problem's ``limit`` member.
REQUESTS_PER_MINUTE = "requests_per_minute"


@dataclass(frozen=True, slots=True)
class Quota:
    """Where a token stands in the current window."""

    limit: int
    used: int
    reset: int  #: seconds until the window ends

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(self.limit - self.used, 0)),
            "RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    """Counts requests per token in Redis; ``count`` blocks (call it in a thread)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._paused_until = 0.0

    def count(self, token_id: str, limit: int) -> Quota | None:
        """Count one request of ``token_id``; None when Redis is unreachable (fail open)."""
        if time.monotonic() < self._paused_until:
            metrics.rate_limit_unavailable()
            return None
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"bulkio:rate:{token_id}:{window}"
        try:
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, 2 * WINDOW_SECONDS)
            used = int(pipe.execute()[0])
        except redis.RedisError as exc:
            self._paused_until = time.monotonic() + PAUSE_SECONDS
            metrics.rate_limit_unavailable()
            log.warning(
                "rate limiter unavailable, requests pass unchecked for %.0f s: %s",
                PAUSE_SECONDS,
                exc,
            )
            return None
        return Quota(limit, used, WINDOW_SECONDS - int(now) % WINDOW_SECONDS)


async def add_rate_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the guard's rate-limit headers on every answer of a limited route,
    error answers included (a header the answer already has is kept)."""
    if message["type"] != "http.response.start":
        return
    values = (scope.get("state") or {}).get(STATE_KEY)
    if not values:
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in values.items():
        if name not in headers:
            headers[name] = value
