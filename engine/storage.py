"""Object storage through obstore: a local directory (default), S3-compatible, or memory (tests).

Uploads stream in (multipart for S3); reads stream out in chunks; downloads are presigned S3 URLs
or, for the local store, HMAC-signed URLs that the API verifies and serves itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import obstore
from obstore.store import LocalStore, MemoryStore, S3Store

from engine.settings import Settings

#: Size of the pieces a stored object is read in.
READ_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Storage:
    store: Any
    kind: str  # "local" | "s3" | "memory"

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
        return Storage(store, "s3")
    raise ValueError(
        f"BULKIO_STORAGE_URL: unsupported scheme in {url!r} (file://, s3://, memory://)"
    )


# ---------------------------------------------------------------- signed local downloads


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
