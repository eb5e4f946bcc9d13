"""The query of ``GET /v1/jobs``: filters checked into an engine JobFilter, the opaque cursor,
and the link to the next page.

The cursor is 24 bytes, base64url without padding (always 32 characters): the last listed job's
``created_at`` (microseconds since 1970, signed 64-bit, big-endian) and ``id`` (16 bytes). Any 32
such characters name a valid position (a time out of range is clamped), so a cursor can be
wrong only in its form.
"""

from __future__ import annotations

import base64
import re
import struct
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from api.problems import Problem
from engine.auth import Principal
from engine.job_list import JobFilter, Position

KINDS = ("import", "export")
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
#: Jobs per page: default and most.
LIMIT_DEFAULT, LIMIT_MAX = 20, 100
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{32}$"
OWNER_PATTERN = r"^[^\x00]*$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EARLIEST = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // _US
_LATEST = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // _US


def encode_cursor(position: Position) -> str:
    micros = (position.created_at - _EPOCH) // _US
    raw = struct.pack(">q", micros) + position.id.bytes
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(text: str) -> Position:
    if not _CURSOR.fullmatch(text):
        raise Problem(
            400, "cursor: not a cursor of this API; pass the next_cursor of a previous page"
        )
    raw = base64.urlsafe_b64decode(text)
    micros = min(max(struct.unpack(">q", raw[:8])[0], _EARLIEST), _LATEST)
    return Position(_EPOCH + micros * _US, uuid.UUID(bytes=raw[8:]))


def timestamp(name: str, raw: str) -> datetime:
    """An ISO-8601 / RFC 3339 timestamp; without an offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise Problem(
            400, f"{name}: {raw!r} is not an ISO-8601 timestamp such as 2024-03-01T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def only_known(query: Mapping[str, object], known: tuple[str, ...]) -> None:
    """400 for a parameter the route does not know: a misspelt filter must not list everything."""
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise Problem(
            400,
            f"unknown query parameter {unknown[0]!r}; this route takes {', '.join(known)}",
        )


def limit(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return LIMIT_DEFAULT
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= LIMIT_MAX):
        raise Problem(400, f"limit must be a whole number from 1 to {LIMIT_MAX}; got {raw!r}")
    return int(text)


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise Problem(400, f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def job_filter(
    principal: Principal, resources: tuple[str, ...], query: Mapping[str, str | None]
) -> JobFilter:
    """The filter a request's query asks for, within what its token may see."""
    kind = _choice("kind", query.get("kind"), KINDS)
    readable = tuple(k for k in KINDS if principal.allows(f"{k}s:read"))
    if kind is not None and kind not in readable:
        raise Problem(403, f"this token lacks the '{kind}s:read' scope")
    if not readable:
        raise Problem(403, "this token lacks the 'imports:read' and 'exports:read' scopes")
    owner = query.get("owner")
    if owner is not None and "\x00" in owner:
        raise Problem(400, "owner must not contain NUL characters")
    if owner is not None and not principal.admin and owner != principal.owner:
        raise Problem(403, "only an admin token may list the jobs of another owner")
    after, before = query.get("created_after"), query.get("created_before")
    return JobFilter(
        owner=principal.owner_filter() if owner is None else owner,
        kinds=(kind,) if kind else (None if readable == KINDS else readable),
        resource=_choice("resource", query.get("resource"), resources),
        status=_choice("status", query.get("status"), STATUSES),
        created_after=timestamp("created_after", after) if after is not None else None,
        created_before=timestamp("created_before", before) if before is not None else None,
    )


def next_link(base_url: str, query: Mapping[str, str | None], cursor: str, size: int) -> str:
    """The URL of the next page: the same filters, the next cursor."""
    kept = {k: v for k, v in query.items() if v is not None and k not in ("cursor", "limit")}
    return f"{base_url}/v1/jobs?" + urlencode({**kept, "limit": str(size), "cursor": cursor})
