"""Bearer-token authentication, scopes and per-token limits, as one Litestar guard.

Every ``/v1`` handler declares the scope it needs in ``opt={"scope": ...}`` (``None``: any valid
token; the handler then checks per job kind). Limits are keyed on the token id, never on
client-supplied headers: requests per minute in Redis (api/ratelimit.py), queued + running jobs
and concurrent uploads and streams in PostgreSQL (api/limits.py).
"""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from api.limits import check_body_size
from api.problems import Problem
from api.ratelimit import REQUESTS_PER_MINUTE, STATE_KEY
from api.state import AppState
from engine import auth
from engine.auth import Principal

#: How long a looked-up token is trusted before it is read again (revocation delay).
CACHE_SECONDS = 10.0


class TokenCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    def get(self, token: str) -> tuple[bool, Principal | None]:
        hit = self._entries.get(token)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, token: str, principal: Principal | None) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (time.monotonic() + CACHE_SECONDS, principal)


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "send an API token: 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="bulkio"'},
        )
    return token.strip()


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    app: AppState = connection.app.state.app
    token = _bearer(connection)
    known, principal = app.tokens.get(token)
    if not known:
        principal = await app.run(auth.lookup, token)
        app.tokens.put(token, principal)
    if principal is None:
        raise Problem(
            401,
            "the API token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="bulkio", error="invalid_token"'},
        )
    return principal


async def _rate_limit(connection: ASGIConnection[Any, Any, Any, Any], principal: Principal) -> None:
    app: AppState = connection.app.state.app
    limit = principal.requests_per_minute or app.settings.rate_limit_per_minute
    if limit <= 0:
        return
    quota = await anyio.to_thread.run_sync(app.ratelimit.count, principal.token_id, limit)
    if quota is None:  # Redis unreachable: fail open (see api/ratelimit.py)
        return
    headers = quota.headers()
    connection.state[STATE_KEY] = headers
    if quota.exceeded:
        raise Problem(
            429,
            f"rate limit of {limit} requests per minute reached for this token",
            headers={**headers, "Retry-After": str(max(quota.reset, 1))},
            limit=REQUESTS_PER_MINUTE,
        )


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard for every /v1 route: a valid token, the handler's scope, within rate limits and
    the route's body size."""
    principal = await authenticate(connection)
    needed = handler.opt.get("scope")
    if needed and not principal.allows(needed):
        raise Problem(403, f"this token lacks the '{needed}' scope")
    await _rate_limit(connection, principal)
    check_body_size(connection, handler)
    connection.state.principal = principal


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = getattr(connection.state, "principal", None)
    if principal is None:  # pragma: no cover - every /v1 route has the guard
        raise Problem(401, "not authenticated")
    return principal  # type: ignore[no-any-return]


def require_kind_scope(principal: Principal, kind: str, action: str) -> None:
    """Jobs routes serve both kinds: imports need imports:<action>, exports exports:<action>."""
    scope = f"{kind}s:{action}"
    if not principal.allows(scope):
        raise Problem(403, f"this token lacks the '{scope}' scope")


def idempotency_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    key = connection.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 200):
        raise Problem(400, "Idempotency-Key must be 1-200 characters")
    return key
