"""The delivery loop: every worker process sends the due deliveries of the webhook outbox.

A delivery is *due* when it is pending and its ``next_attempt_at`` has passed. A loop takes due
rows with ``FOR UPDATE SKIP LOCKED`` (so each goes to one worker) and moves their
``next_attempt_at`` to the end of a lease (twice the timeout plus a margin): if the worker dies
while sending, the row is due again when the lease ends, and the next worker records the lost
attempt and sends it again, with the same ``webhook-id``. Results are written only by the holder
of the row's current lease (``lease_token``).

Each attempt is one POST through the SSRF guard (:mod:`engine.netguard`: the URL is resolved
and checked again, the connection pinned to the checked address), with
BULKIO_WEBHOOK_TIMEOUT_SECONDS for all of it and no redirect followed. Then:

* ``2xx``: delivered;
* ``410 Gone``: the endpoint is disabled and its pending deliveries fail;
* anything else (3xx, 4xx, 5xx, timeout, refused address...): the next attempt waits the next
  step of BULKIO_WEBHOOK_RETRY_SCHEDULE (with jitter), or longer when a ``429`` or ``503``
  says ``Retry-After``; after the last step the delivery has failed.

The loop sleeps until the next delivery is due or a NOTIFY on ``bulkio_webhooks`` (sent by the
outbox trigger and by redelivery) wakes it; at most BULKIO_RECONCILE_SECONDS in any case.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from engine import __version__, db, netguard, webhooks
from engine.settings import Settings

log = logging.getLogger("bulkio.webhooks")

#: Added to twice the timeout to make a delivery's lease (DNS, TLS, recording the result).
LEASE_MARGIN_SECONDS = 10
#: Each wait of the retry schedule is multiplied by a random factor in 1 +- JITTER.
JITTER = 0.1
#: A receiver's ``Retry-After`` is honoured up to this many seconds.
RETRY_AFTER_MAX = 86_400
#: Statuses whose ``Retry-After`` sets the earliest next attempt.
RETRY_AFTER_STATUSES = (429, 503)
#: Characters of a failed answer's body kept in the attempt's error.
EXCERPT_CHARS = 200
USER_AGENT = f"bulkio-webhooks/{__version__}"
#: The error of an attempt whose worker stopped before it had a result.
LOST = "no result: the worker sending it stopped (its lease ran out)"
_RNG = random.Random()
#: How often a waiting loop looks whether its worker is stopping (no query: a socket poll).
STOP_CHECK_SECONDS = 0.5
#: Pause after a failed round of the loop (database unreachable), doubling up to the maximum.
RETRY_PAUSE = (1.0, 30.0)


def retry_delays(settings: Settings) -> tuple[int, ...]:
    return tuple(int(v) for v in settings.webhook_retry_schedule)


def lease_seconds(settings: Settings) -> int:
    return 2 * settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS


@dataclass(frozen=True, slots=True)
class Leased:
    """A delivery taken by this worker, with what sending it needs."""

    id: str
    token: str
    endpoint_id: str
    #: The number of this attempt (all attempts of the message) and of its retry schedule.
    attempt: int
    tries: int
    event_type: str
    data: dict[str, Any]
    event_at: datetime
    url: str
    enabled: bool
    #: The secrets that sign: the current one, and the previous one during a rotation.
    keys: tuple[str, ...]
    #: The previous lease of this row ran out without a result (its worker died).
    lost_attempt: int | None
    lost_at: datetime | None


@dataclass(frozen=True, slots=True)
class Outcome:
    started_at: datetime
    duration_ms: int
    status: int | None
    error: str | None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


_LEASE = """
WITH due AS (
    SELECT d.id, d.lease_owner AS lost_owner, d.attempts AS lost_attempt,
           d.leased_at AS lost_at
    FROM webhook_deliveries AS d
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries AS d
SET lease_owner = %(worker)s, lease_token = gen_random_uuid(), leased_at = now(),
    next_attempt_at = now() + make_interval(secs => %(lease)s),
    attempts = d.attempts + 1, tries = d.tries + 1
FROM due, webhook_endpoints AS e
WHERE d.id = due.id AND e.id = d.endpoint_id
RETURNING d.id, d.lease_token::text AS token, d.endpoint_id::text AS endpoint_id,
          d.attempts AS attempt, d.tries, d.event_type, d.data, d.event_at, e.url, e.enabled,
          e.secret, CASE WHEN e.previous_expires > now() THEN e.previous_secret END AS previous,
          due.lost_owner, due.lost_attempt, due.lost_at
"""


def lease(conn: psycopg.Connection[Any], worker: str, n: int, lease_for: int) -> list[Leased]:
    """Take up to ``n`` due deliveries for ``lease_for`` seconds."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_LEASE, {"n": n, "worker": worker, "lease": lease_for}).fetchall()
    return [
        Leased(
            id=r["id"],
            token=r["token"],
            endpoint_id=r["endpoint_id"],
            attempt=r["attempt"],
            tries=r["tries"],
            event_type=r["event_type"],
            data=dict(r["data"]),
            event_at=r["event_at"],
            url=r["url"],
            enabled=r["enabled"],
            keys=tuple(k for k in (r["secret"], r["previous"]) if k),
            lost_attempt=r["lost_attempt"] if r["lost_owner"] else None,
            lost_at=r["lost_at"] if r["lost_owner"] else None,
        )
        for r in rows
    ]


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(min(int(text), RETRY_AFTER_MAX))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min(when.timestamp() - now, RETRY_AFTER_MAX))


def next_wait(
    tries: int, delays: tuple[int, ...], outcome: Outcome, rng: random.Random
) -> float | None:
    """Seconds until the next attempt after ``tries`` failed ones, or None: no more attempts."""
    if tries >= len(delays):
        return None
    wait = delays[tries] * rng.uniform(1 - JITTER, 1 + JITTER)
    if outcome.retry_after is not None and outcome.status in RETRY_AFTER_STATUSES:
        wait = max(wait, outcome.retry_after)
    return wait


def send(
    item: Leased,
    settings: Settings,
    policy: netguard.Policy,
    resolver: netguard.Resolver = netguard.system_resolver,
) -> Outcome:
    """One attempt: POST the payload, signed, to the endpoint (guarded, pinned, no redirects)."""
    body = webhooks.payload(item.event_type, item.data, item.event_at, settings.public_url)
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": item.id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": webhooks.signature_header(item.keys, item.id, stamp, body),
    }
    started = datetime.now(UTC)
    clock = time.monotonic()
    timeout = settings.webhook_timeout_seconds

    def took() -> int:
        return int((time.monotonic() - clock) * 1000)

    try:
        with netguard.request(
            item.url,
            policy,
            method="POST",
            headers=headers,
            body=body,
            timeout=timeout,
            deadline=timeout,
            resolver=resolver,
        ) as answer:
            status = answer.status
            error = None
            if not 200 <= status < 300:
                excerpt = answer.read(EXCERPT_CHARS * 4).decode("utf-8", "replace")
                excerpt = " ".join(excerpt.split())[:EXCERPT_CHARS]
                error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
                if 300 <= status < 400:
                    error += " (redirects are not followed: register the final URL)"
            after = retry_after(answer.headers.get("retry-after"), time.time())
            return Outcome(started, took(), status, error, after)
    except Exception as exc:  # every failure of the attempt is its result, not the loop's
        return Outcome(started, took(), None, netguard.describe(exc))


def record(
    conn: psycopg.Connection[Any],
    item: Leased,
    outcome: Outcome,
    wait: float | None,
    worker: str,
) -> None:
    """Store the attempt and what follows from it, if this worker still holds the lease."""
    with conn.transaction():
        _attempt(conn, item.id, item.attempt, outcome.started_at, outcome, worker)
        if outcome.ok:
            conn.execute(
                "UPDATE webhook_deliveries SET state = 'delivered', finished_at = now(), "
                "next_attempt_at = NULL, lease_owner = NULL, lease_token = NULL, "
                "last_status = %s, last_error = NULL WHERE id = %s AND lease_token = %s",
                (outcome.status, item.id, item.token),
            )
        elif outcome.status == 410:
            _fail(conn, item, outcome.status, f"{outcome.error}; the endpoint is disabled")
            disable(conn, item.endpoint_id, f"the receiver answered 410 Gone ({item.url})")
        elif wait is None:
            _fail(conn, item, outcome.status, outcome.error)
        else:
            conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now() + "
                "make_interval(secs => %s), lease_owner = NULL, lease_token = NULL, "
                "last_status = %s, last_error = %s WHERE id = %s AND lease_token = %s",
                (wait, outcome.status, outcome.error, item.id, item.token),
            )


def _attempt(
    conn: psycopg.Connection[Any],
    delivery_id: str,
    n: int,
    started_at: datetime,
    outcome: Outcome | None,
    worker: str,
) -> None:
    """One attempt row (``outcome`` None: a lost attempt); none if the delivery is gone."""
    conn.execute(
        "INSERT INTO webhook_attempts (delivery_id, n, started_at, duration_ms, status_code, "
        "error, worker) SELECT %s, %s, %s, %s, %s, %s, %s "
        "WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = %s) "
        "ON CONFLICT (delivery_id, n) DO NOTHING",
        (
            delivery_id,
            n,
            started_at,
            outcome.duration_ms if outcome else None,
            outcome.status if outcome else None,
            outcome.error if outcome else LOST,
            worker,
            delivery_id,
        ),
    )


def _fail(
    conn: psycopg.Connection[Any], item: Leased, status: int | None, error: str | None
) -> None:
    conn.execute(
        "UPDATE webhook_deliveries SET state = 'failed', finished_at = now(), "
        "next_attempt_at = NULL, lease_owner = NULL, lease_token = NULL, last_status = %s, "
        "last_error = %s WHERE id = %s AND lease_token = %s",
        (status, error, item.id, item.token),
    )


def disable(conn: psycopg.Connection[Any], endpoint_id: str, reason: str) -> None:
    """Disable an endpoint; its pending deliveries fail (a lease on one of them is void)."""
    conn.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = %s, updated_at = now() "
        "WHERE id = %s",
        (reason, endpoint_id),
    )
    conn.execute(
        "UPDATE webhook_deliveries SET state = 'failed', finished_at = now(), "
        "next_attempt_at = NULL, lease_owner = NULL, lease_token = NULL, "
        "last_status = coalesce(last_status, 410), last_error = %s "
        "WHERE endpoint_id = %s AND state = 'pending'",
        (f"endpoint disabled: {reason}", endpoint_id),
    )


def deliver(
    pool: ConnectionPool[Any],
    item: Leased,
    settings: Settings,
    worker: str,
    *,
    resolver: netguard.Resolver = netguard.system_resolver,
    rng: random.Random | None = None,
) -> Outcome | None:
    """Handle one leased delivery: note a lost attempt before it, send, record the result.
    None when nothing was sent (the endpoint is disabled, or the lost attempt was the last)."""
    delays = retry_delays(settings)
    with pool.connection() as conn:
        if item.lost_attempt is not None:
            _attempt(
                conn, item.id, item.lost_attempt, item.lost_at or datetime.now(UTC), None, worker
            )
        if not item.enabled:
            _fail(conn, item, None, "endpoint disabled")
            return None
        if item.tries > len(delays):
            _fail(conn, item, None, LOST)
            return None
    policy = netguard.Policy(settings.webhook_allow_private)
    outcome = send(item, settings, policy, resolver)
    wait = None if outcome.ok else next_wait(item.tries, delays, outcome, rng or _RNG)
    with pool.connection() as conn:
        record(conn, item, outcome, wait, worker)
    log.info(
        "webhook attempt",
        extra={
            "delivery": item.id,
            "attempt": item.attempt,
            "status": outcome.status,
            "error": outcome.error,
            "ms": outcome.duration_ms,
            "retry_in_s": None if wait is None else round(wait, 1),
        },
    )
    return outcome


class DeliveryLoop:
    """Sends due deliveries, at most BULKIO_WEBHOOK_CONCURRENCY at a time, until stopped."""

    def __init__(
        self,
        settings: Settings,
        worker: str,
        *,
        resolver: netguard.Resolver = netguard.system_resolver,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.resolver = resolver
        self.size = settings.webhook_concurrency
        self._busy = 0
        self._lock = threading.Lock()
        self._freed = threading.Event()

    def run(self, stop: threading.Event) -> None:
        idle = db.idle_in_transaction_ms(self.settings.lease_seconds)
        pool: ConnectionPool[Any] = ConnectionPool(
            db.conninfo(self.settings.database_url, "bulkio-webhooks", idle),
            min_size=1,
            max_size=self.size,
            kwargs={"autocommit": True},
            open=True,
            name="bulkio-webhooks",
        )
        executor = ThreadPoolExecutor(self.size, thread_name_prefix="webhook")
        conn: psycopg.Connection[Any] | None = None
        pause = RETRY_PAUSE[0]
        try:
            while not stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = db.connect(
                            self.settings.database_url, name="bulkio-webhooks", idle_ms=idle
                        )
                        conn.execute(f"LISTEN {webhooks.CHANNEL}")
                    self._round(conn, pool, executor, stop)
                    pause = RETRY_PAUSE[0]
                except Exception:
                    log.warning("webhook delivery round failed", exc_info=True)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    conn = None
                    stop.wait(pause)
                    pause = min(pause * 2, RETRY_PAUSE[1])
        finally:
            executor.shutdown(wait=True)
            if conn is not None:
                conn.close()
            pool.close()

    def _round(
        self,
        conn: psycopg.Connection[Any],
        pool: ConnectionPool[Any],
        executor: ThreadPoolExecutor,
        stop: threading.Event,
    ) -> None:
        """Start what is due (as many as there are free slots), then wait for more."""
        with self._lock:
            free = self.size - self._busy
        if free > 0:
            got = lease(conn, self.worker, free, lease_seconds(self.settings))
            for item in got:
                with self._lock:
                    self._busy += 1
                future = executor.submit(
                    deliver, pool, item, self.settings, self.worker, resolver=self.resolver
                )
                future.add_done_callback(self._done)
            if len(got) == free:
                return  # perhaps more are due: look again at once
        cap = float(self.settings.reconcile_seconds)
        if free <= 0:
            self._freed.wait(min(cap, STOP_CHECK_SECONDS))
            self._freed.clear()
            return
        row = conn.execute(
            "SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp()) "
            "FROM webhook_deliveries WHERE state = 'pending'"
        ).fetchone()
        due_in = cap if row is None or row[0] is None else float(row[0])
        deadline = time.monotonic() + min(max(due_in, 0.05), cap)
        while not stop.is_set():  # in slices: a stopping worker does not wait out the cap
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for _ in conn.notifies(timeout=min(left, STOP_CHECK_SECONDS), stop_after=1):
                return

    def _done(self, future: Future[Outcome | None]) -> None:
        with self._lock:
            self._busy -= 1
        self._freed.set()
        exc = future.exception()
        if exc is not None:
            log.warning("webhook delivery failed to run", exc_info=exc)
