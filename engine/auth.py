"""API tokens: creation, revocation, lookup. Tokens are random 256-bit secrets shown once; only
their SHA-256 digest is stored (a fast hash is right for high-entropy secrets: there is nothing to
brute-force), so a database leak does not leak usable tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

#: Every scope a token can hold. ``admin`` sees and does everything, including other owners' jobs.
#: ``webhooks:read`` / ``webhooks:write``: see / manage the owner's webhook endpoints.
SCOPES = (
    "imports:write",
    "imports:read",
    "exports:read",
    "exports:write",
    "webhooks:read",
    "webhooks:write",
    "admin",
)
#: Prefix that makes bulkio tokens recognisable in logs and secret scanners.
TOKEN_PREFIX = "bk_"


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    owner: str
    scopes: frozenset[str]
    requests_per_minute: int | None
    max_running_jobs: int | None

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    def owner_filter(self) -> str | None:
        """The owner whose jobs this principal may see; None = every owner (admin)."""
        return None if self.admin else self.owner


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    conn: psycopg.Connection[Any],
    owner: str,
    scopes: list[str],
    name: str = "",
    requests_per_minute: int | None = None,
    max_running_jobs: int | None = None,
) -> tuple[str, str]:
    """Create a token; returns (token id, the secret token — shown once, never stored)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}; got {', '.join(scopes)}")
    if not owner.strip():
        raise ValueError("owner must not be empty")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO api_tokens (id, owner, name, token_sha256, scopes, requests_per_minute, "
        "max_running_jobs) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            token_id,
            owner,
            name,
            digest(token),
            sorted(set(scopes)),
            requests_per_minute,
            max_running_jobs,
        ),
    )
    return token_id, token


def revoke_token(conn: psycopg.Connection[Any], token_id: str) -> bool:
    cur = conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id::text = %s AND revoked_at IS NULL",
        (token_id,),
    )
    return cur.rowcount == 1


def list_tokens(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, owner, name, scopes, created_at, revoked_at FROM api_tokens ORDER BY created_at"
    ).fetchall()


def lookup(conn: psycopg.Connection[Any], token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(
        "SELECT id, owner, scopes, requests_per_minute, max_running_jobs FROM api_tokens "
        "WHERE token_sha256 = %s AND revoked_at IS NULL",
        (digest(token),),
    ).fetchone()
    if row is None:
        return None
    return Principal(str(row[0]), row[1], frozenset(row[2]), row[3], row[4])
