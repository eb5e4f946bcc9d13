"""Object storage through obstore: a local directory (default), S3-compatible, or memory (tests).

Uploads stream in (multipart for S3); reads stream out in chunks; downloads are presigned S3 URLs
or, for the local store, HMAC-signed URLs that the API verifies and serves itself. Their key is
``BULKIO_SIGNING_SECRET`` or else one generated once and kept in PostgreSQL
(:func:`signing_secret`), so every API process, and the same one after a restart, accepts the
URLs of the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import obstore
import psycopg
from obstore.store import LocalStore, MemoryStore, S3Store

from engine.settings import Settings

#: Size of the pieces a stored object is read in.
READ_CHUNK = 4 * 1024 * 1024
#: Row of the ``secrets`` table (migration 0006) holding the download-signing key.
SIGNING_SECRET_NAME = "download_signing"


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where and how an S3 store writes: what engine/multipart.py needs to drive multipart
    uploads part by part (obstore does not expose them)."""

    bucket: str
    prefix: str | None
    region: str
    endpoint: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)

    def key(self, path: str) -> str:
        """The object key of a store path (the store's prefix joined as obstore joins it)."""
        return f"{self.prefix}/{path}" if self.prefix else path


@dataclass(frozen=True, slots=True)
class Storage:
    store: Any
    kind: str  # "local" | "s3" | "memory"
    #: S3 stores: their bucket, prefix, endpoint and credentials (engine/multipart.py).
    s3: S3Location | None = None

    async def put_stream(self, path: str, chunks: AsyncIterable[bytes]) -> None:
        await obstore.put_async(self.store, path, chunks)

    def put(self, path: str, data: bytes) -> None:
        obstore.put(self.store, path, data)

    def writer(self, path: str) -> Any:
        """A streaming writable file (multipart upload on S3); call ``close()`` to finish."""
        return obstore.open_writer(self.store, path, buffer_size=8 * 1024 * 1024)

    def read(self, path: str, offset: int = 0) -> Iterator[bytes]:
        options: dict[str, Any] = {"range": {"offset": offset}} if offset else {}
        result = obstore.get(self.store, path, options=options or None)  # type: ignore[arg-type]
        for chunk in result.stream(min_chunk_size=READ_CHUNK):
            yield bytes(chunk)

    def size(self, path: str) -> int:
        return int(obstore.head(self.store, path)["size"])

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self.store, path)

    def local_path(self, path: str) -> Path:
        """The file of ``path`` in a local store (appends bypass obstore: engine/uploads.py)."""
        if self.kind != "local":
            raise ValueError(f"{self.kind} storage has no local files")
        return Path(self.store.prefix) / path

    def presign(self, path: str, ttl: int) -> str | None:
        """A presigned GET URL (S3 only); None for stores the API must serve itself."""
        if self.kind != "s3":
            return None
        return str(obstore.sign(self.store, "GET", path, timedelta(seconds=ttl)))


def open_storage(settings: Settings) -> Storage:
    url = settings.resolved_storage_url()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Storage(LocalStore(parsed.path, mkdir=True), "local")
    if parsed.scheme == "memory":
        return Storage(MemoryStore(), "memory")
    if parsed.scheme == "s3":
        config: dict[str, Any] = {"region": settings.s3_region}
        if settings.s3_endpoint:
            config["endpoint"] = settings.s3_endpoint
            config["virtual_hosted_style_request"] = False
        if settings.s3_access_key_id:
            config["access_key_id"] = settings.s3_access_key_id
            config["secret_access_key"] = settings.s3_secret_access_key
        store = S3Store(
            parsed.netloc,
            prefix=parsed.path.strip("/") or None,
            client_options={"allow_http": settings.s3_endpoint.startswith("http://")},
            **config,
        )
        location = S3Location(
            parsed.netloc,
            parsed.path.strip("/") or None,
            settings.s3_region,
            settings.s3_endpoint,
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
        )
        return Storage(store, "s3", location)
    raise ValueError(
        f"BULKIO_STORAGE_URL: unsupported scheme in {url!r} (file://, s3://, memory://)"
    )


# ---------------------------------------------------------------- signed local downloads


def signing_secret(conn: psycopg.Connection[Any], settings: Settings) -> bytes:
    """The HMAC key of local download URLs: ``BULKIO_SIGNING_SECRET`` if set, else the one kept in
    PostgreSQL, generated by whichever process asks first (``conn``: autocommit)."""
    if settings.signing_secret:
        return settings.signing_secret.encode()
    for _ in range(3):  # a row deleted (rotated) between the two statements: once more
        try:
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                (SIGNING_SECRET_NAME, secrets.token_bytes(32)),
            )
        except psycopg.errors.UndefinedTable as exc:
            raise RuntimeError(
                "table secrets is missing: run `bulkio migrate` before starting the API"
            ) from exc
        # A statement of its own: its snapshot sees a row another process inserted meanwhile.
        row = conn.execute(
            "SELECT value FROM secrets WHERE name = %s", (SIGNING_SECRET_NAME,)
        ).fetchone()
        if row is not None:
            return bytes(row[0])
    raise RuntimeError(f"the {SIGNING_SECRET_NAME} secret keeps disappearing from table secrets")


def sign_path(secret: bytes, path: str, expires: int) -> str:
    return hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_query(secret: bytes, path: str, ttl: int, now: float | None = None) -> dict[str, str]:
    expires = int((now or time.time()) + ttl)
    return {"expires": str(expires), "signature": sign_path(secret, path, expires)}


def verify_signature(
    secret: bytes, path: str, expires: str, signature: str, now: float | None = None
) -> bool:
    try:
        deadline = int(expires)
    except ValueError:
        return False
    if deadline < (now or time.time()):
        return False
    return hmac.compare_digest(sign_path(secret, path, deadline), signature)
