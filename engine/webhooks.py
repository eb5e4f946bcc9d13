"""Webhooks: an owner's endpoints, the outbox of deliveries, signing and the payload.

Follows the Standard Webhooks specification:

* each delivery is a POST of a thin JSON payload ``{"type", "timestamp", "data"}`` (the job's id,
  kind, resource, status, final counters and API links; no presigned URL: it would expire);
* headers ``webhook-id`` (``msg_…``, the same on every attempt: the receiver's idempotency
  key), ``webhook-timestamp`` (Unix seconds of the attempt) and ``webhook-signature``:
  ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed with the base64-decoded
  part of the endpoint's ``whsec_…`` secret. For ``BULKIO_WEBHOOK_ROTATION_SECONDS`` after a
  rotation the previous secret signs too: two signatures, space-separated, so a receiver can
  switch secrets without losing a message.

At least once: the outbox row of each matching endpoint is written by PostgreSQL itself (a
trigger on ``job_events``, migration 0011) in the transaction whose update ends the job. The
delivery loop of every worker (:mod:`engine.webhook_delivery`) sends due rows under a lease,
so a worker that dies mid-delivery only delays it.

Every endpoint URL passes the SSRF guard (:mod:`engine.netguard`) when it is registered and
again at each attempt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row

from engine import netguard

#: The event types an endpoint may subscribe to: ``<job kind>.<terminal status>``.
EVENT_TYPES = (
    "import.completed",
    "import.failed",
    "import.cancelled",
    "export.completed",
    "export.failed",
    "export.cancelled",
)
#: Prefix of signing secrets (Standard Webhooks), followed by the base64 of the key.
SECRET_PREFIX = "whsec_"
#: Random bytes of a signing secret (the spec asks for 24 to 64).
SECRET_BYTES = 32
#: Endpoints one owner may have (each job end fans out to all of them).
MAX_ENDPOINTS = 20
#: Endpoints one listing shows at most.
LIST_MAX = 100
MAX_URL_CHARS = 2048
MAX_DESCRIPTION_CHARS = 200
#: The NOTIFY channel that wakes the delivery loops (new or redelivered messages).
CHANNEL = "bulkio_webhooks"
#: Delivery states.
STATES = ("pending", "delivered", "failed")
#: Attempts shown per delivery in a history page (the newest ones).
ATTEMPTS_SHOWN = 20
#: Deliveries per history page: default and most.
PAGE_DEFAULT, PAGE_MAX = 20, 100
#: Counters and facts of the job, in the order the payload's ``data`` gives them.
PAYLOAD_FIELDS = (
    "job_id",
    "kind",
    "resource",
    "format",
    "mode",
    "status",
    "total_records",
    "processed",
    "successful",
    "failed",
    "error_count",
    "inserted",
    "updated",
    "bytes_read",
    "duration_ms",
    "result_bytes",
    "error",
)


class EndpointRefused(ValueError):
    """Raised when an endpoint cannot be registered as asked; ``code`` names why (``url``,
    ``event_types``, ``description``, ``too_many``), ``reason`` the guard's reason for a URL."""

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class NotRedeliverable(ValueError):
    """Raised when a delivery cannot be sent again now (still pending, endpoint disabled)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    owner: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    #: Until when the previous secret still signs (after a rotation), else None.
    previous_expires: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    n: int
    started_at: datetime
    duration_ms: int | None
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    endpoint_id: str
    job_id: str
    event_type: str
    state: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    event_at: datetime
    created_at: datetime
    finished_at: datetime | None
    attempts: list[Attempt]


# ---------------------------------------------------------------- secrets and signatures


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: ``v1,<base64 HMAC-SHA256>``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(keys: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def links(public_url: str, job_id: str, kind: str) -> dict[str, str]:
    found = {
        "job": f"{public_url}/v1/jobs/{job_id}",
        "events": f"{public_url}/v1/jobs/{job_id}/events",
    }
    if kind == "import":
        found["errors"] = f"{public_url}/v1/imports/{job_id}/errors"
    return found


def payload(event_type: str, data: dict[str, Any], event_at: datetime, public_url: str) -> bytes:
    """The body of a delivery: the same bytes on every attempt of one message."""
    body = {k: data[k] for k in PAYLOAD_FIELDS if k in data and data[k] is not None}
    body["links"] = links(public_url, str(data["job_id"]), str(data["kind"]))
    return msgspec.json.encode({"type": event_type, "timestamp": _iso(event_at), "data": body})


# ---------------------------------------------------------------- endpoints


def _endpoint(row: dict[str, Any]) -> Endpoint:
    return Endpoint(
        id=str(row["id"]),
        owner=row["owner"],
        url=row["url"],
        event_types=list(row["event_types"]),
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        previous_expires=row["rotating_until"],
    )


_ENDPOINT_COLUMNS = (
    "id, owner, url, event_types, description, enabled, disabled_reason, created_at, "
    "updated_at, CASE WHEN previous_expires > now() THEN previous_expires END AS rotating_until"
)


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """The event types, each once, in the order given; refuses an unknown one or none."""
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if unknown or not event_types:
        raise EndpointRefused(
            "event_types",
            f"event_types must list one or more of {', '.join(EVENT_TYPES)}"
            + (f"; unknown: {', '.join(map(repr, unknown[:5]))}" if unknown else ""),
        )
    return list(dict.fromkeys(event_types))


def check_endpoint_url(
    url: str, policy: netguard.Policy, resolver: netguard.Resolver = netguard.system_resolver
) -> str:
    """The URL, stripped, if the guard accepts it now (form, resolution, every address)."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise EndpointRefused("url", f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        netguard.check_url(url, policy, resolver)
    except netguard.Refused as exc:
        raise EndpointRefused("url", f"webhook URL refused: {exc}", exc.reason) from None
    except netguard.Unresolvable as exc:
        raise EndpointRefused("url", f"webhook URL refused: {exc}", "unresolvable") from None
    return url


def create_endpoint(
    conn: psycopg.Connection[Any],
    owner: str,
    url: str,
    event_types: Sequence[str],
    description: str,
    policy: netguard.Policy,
    resolver: netguard.Resolver = netguard.system_resolver,
) -> tuple[Endpoint, str]:
    """Register an endpoint; returns it and its signing secret (shown once)."""
    types = check_event_types(event_types)
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_CHARS or "\x00" in description:
        raise EndpointRefused(
            "description", f"description: at most {MAX_DESCRIPTION_CHARS} characters, no NUL"
        )
    url = check_endpoint_url(url, policy, resolver)
    secret = new_secret()
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # One owner's registrations one at a time: the count below cannot be overshot.
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('webhooks:' || %s, 0))", (owner,)
        )
        count = cur.execute(
            "SELECT count(*) AS n FROM webhook_endpoints WHERE owner = %s", (owner,)
        ).fetchone()
        if count is not None and count["n"] >= MAX_ENDPOINTS:
            raise EndpointRefused(
                "too_many", f"an owner may have at most {MAX_ENDPOINTS} webhook endpoints"
            )
        row = cur.execute(
            f"INSERT INTO webhook_endpoints (id, owner, url, event_types, description, secret) "
            f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_ENDPOINT_COLUMNS}",
            (str(uuid.uuid4()), owner, url, types, description, secret),
        ).fetchone()
    assert row is not None
    return _endpoint(row), secret


def _valid_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def get_endpoint(
    conn: psycopg.Connection[Any], endpoint_id: str, owner: str | None
) -> Endpoint | None:
    """The endpoint, or None when it does not exist or is another owner's (None: anyone's)."""
    if not _valid_uuid(endpoint_id):
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "
            "WHERE id = %s AND (%s::text IS NULL OR owner = %s)",
            (endpoint_id, owner, owner),
        ).fetchone()
    return _endpoint(row) if row else None


def list_endpoints(conn: psycopg.Connection[Any], owner: str) -> list[Endpoint]:
    """The owner's endpoints, oldest first: at most MAX_ENDPOINTS, or a few more if the cap
    was lowered since they were registered (bounded all the same)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE owner = %s "
            "ORDER BY created_at, id LIMIT %s",
            (owner, LIST_MAX),
        ).fetchall()
    return [_endpoint(r) for r in rows]


def delete_endpoint(conn: psycopg.Connection[Any], endpoint_id: str, owner: str | None) -> bool:
    """Delete the endpoint with its deliveries and their attempts."""
    if not _valid_uuid(endpoint_id):
        return False
    cur = conn.execute(
        "DELETE FROM webhook_endpoints WHERE id = %s AND (%s::text IS NULL OR owner = %s)",
        (endpoint_id, owner, owner),
    )
    return cur.rowcount == 1


def rotate_secret(
    conn: psycopg.Connection[Any], endpoint_id: str, owner: str | None, window_seconds: int
) -> tuple[Endpoint, str] | None:
    """A new signing secret (returned once); the current one keeps signing beside it for
    ``window_seconds``. A secret rotated out earlier stops signing now."""
    if not _valid_uuid(endpoint_id):
        return None
    secret = new_secret()
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = %s, "
            "previous_expires = now() + make_interval(secs => %s), updated_at = now() "
            f"WHERE id = %s AND (%s::text IS NULL OR owner = %s) RETURNING {_ENDPOINT_COLUMNS}",
            (secret, window_seconds, endpoint_id, owner, owner),
        ).fetchone()
    return (_endpoint(row), secret) if row else None


# ---------------------------------------------------------------- delivery history


def list_deliveries(
    conn: psycopg.Connection[Any],
    endpoint_id: str,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[list[Delivery], tuple[datetime, str] | None]:
    """A page of the endpoint's deliveries, newest first, each with its newest attempts; and
    where the next page starts (None on the last)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM webhook_deliveries WHERE endpoint_id = %s "
            "AND (%s::timestamptz IS NULL OR (created_at, id) < (%s, %s)) "
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            (
                endpoint_id,
                after[0] if after else None,
                after[0] if after else None,
                after[1] if after else None,
                limit + 1,
            ),
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        attempts: dict[str, list[Attempt]] = {}
        if rows:
            found = cur.execute(
                "SELECT a.* FROM unnest(%s::text[]) AS d (id) CROSS JOIN LATERAL ("
                "  SELECT * FROM webhook_attempts WHERE delivery_id = d.id "
                "  ORDER BY n DESC LIMIT %s) AS a ORDER BY a.delivery_id, a.n",
                ([r["id"] for r in rows], ATTEMPTS_SHOWN),
            ).fetchall()
            for a in found:
                attempts.setdefault(a["delivery_id"], []).append(
                    Attempt(a["n"], a["started_at"], a["duration_ms"], a["status_code"], a["error"])
                )
    page = [_delivery(r, attempts.get(r["id"], [])) for r in rows]
    last = (rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return page, last


def _delivery(row: dict[str, Any], attempts: list[Attempt]) -> Delivery:
    return Delivery(
        id=row["id"],
        endpoint_id=str(row["endpoint_id"]),
        job_id=str(row["job_id"]),
        event_type=row["event_type"],
        state=row["state"],
        attempt_count=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if row["state"] == "pending" else None,
        last_status=row["last_status"],
        last_error=row["last_error"],
        event_at=row["event_at"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        attempts=attempts,
    )


def get_delivery(
    conn: psycopg.Connection[Any], endpoint_id: str, delivery_id: str
) -> Delivery | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM webhook_deliveries WHERE id = %s AND endpoint_id = %s",
            (delivery_id, endpoint_id),
        ).fetchone()
        if row is None:
            return None
        found = cur.execute(
            "SELECT * FROM (SELECT * FROM webhook_attempts WHERE delivery_id = %s "
            "ORDER BY n DESC LIMIT %s) AS a ORDER BY n",
            (delivery_id, ATTEMPTS_SHOWN),
        ).fetchall()
    attempts = [
        Attempt(a["n"], a["started_at"], a["duration_ms"], a["status_code"], a["error"])
        for a in found
    ]
    return _delivery(row, attempts)


def list_attempts(
    conn: psycopg.Connection[Any], endpoint_id: str, delivery_id: str, after: int, limit: int
) -> list[Attempt] | None:
    """Every attempt of one delivery, oldest first, from attempt ``after + 1`` on (a page of
    ``limit + 1``, so the caller can tell whether more follow); None: no such delivery."""
    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute(
            "SELECT 1 FROM webhook_deliveries WHERE id = %s AND endpoint_id = %s",
            (delivery_id, endpoint_id),
        ).fetchone()
        if found is None:
            return None
        rows = cur.execute(
            "SELECT * FROM webhook_attempts WHERE delivery_id = %s AND n > %s ORDER BY n LIMIT %s",
            (delivery_id, after, limit + 1),
        ).fetchall()
    return [
        Attempt(a["n"], a["started_at"], a["duration_ms"], a["status_code"], a["error"])
        for a in rows
    ]


def redeliver(conn: psycopg.Connection[Any], endpoint_id: str, delivery_id: str) -> bool:
    """Send a delivered or failed message again, now, with a fresh retry schedule and the same
    ``webhook-id``. False when there is no such delivery; :class:`NotRedeliverable` when it is
    still pending or its endpoint is disabled."""
    with conn.transaction():
        row = conn.execute(
            "SELECT d.state, e.enabled FROM webhook_deliveries AS d "
            "JOIN webhook_endpoints AS e ON e.id = d.endpoint_id "
            "WHERE d.id = %s AND d.endpoint_id = %s FOR UPDATE OF d",
            (delivery_id, endpoint_id),
        ).fetchone()
        if row is None:
            return False
        state, enabled = row
        if not enabled:
            raise NotRedeliverable("the endpoint is disabled; register it again to receive")
        if state == "pending":
            raise NotRedeliverable("this delivery is still pending: it is being retried")
        conn.execute(
            "UPDATE webhook_deliveries SET state = 'pending', tries = 0, "
            "next_attempt_at = now(), finished_at = NULL, lease_owner = NULL, "
            "lease_token = NULL WHERE id = %s",
            (delivery_id,),
        )
        conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return True
