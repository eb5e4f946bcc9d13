"""Direct uploads: a big file goes to storage through an upload session (``POST /v1/uploads``),
not through ``POST /v1/imports``, and survives a broken connection.

The steps: the file's SHA-256 (a ``checksum`` bar), the session, the bytes (S3: each missing
part PUT to its presigned URL, without the token; local store: ``PATCH`` of the data URL at
``Upload-Offset``), completion (the server checks the size and the SHA-256), then the import
(``POST /v1/imports`` with ``upload_id``, under an Idempotency-Key — the user's, or one made for
this run — so a retried request cannot make two jobs).

After a network error, or an answer that may pass (408, 409, 429, 5xx; 403 from S3: an expired
URL), the client waits (exponential backoff), asks the server what arrived
(``GET /v1/uploads/{id}``, with fresh URLs) and sends only the rest. It gives up after
:data:`RETRIES` failures in a row without a byte more arriving.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.client.display import Output
from engine.client.errors import ApiError, ClientError, Unreachable
from engine.client.service import CHUNK, Service, check

#: Default size from which ``bulkio import`` sends a file through an upload session.
DEFAULT_THRESHOLD = 64 * 1024 * 1024
#: Failures in a row, without progress, before the client gives up; first wait and longest.
RETRIES, FIRST_WAIT, LONGEST_WAIT = 8, 0.5, 30.0
#: Statuses worth another try after asking the server where things stand.
PASSING = {403, 408, 409, 423, 425, 429, 500, 502, 503, 504}
#: Seconds the server may take to complete an upload (on S3 it reads the whole file once).
COMPLETE_TIMEOUT = 1800.0
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``64MiB``, ``64M``, ``512k``, ``1G`` or a number of bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (e.g. 64MiB, 512K, 1G or bytes)")
    power = " kmgt".index((match.group(2) or " ").lower())
    return int(match.group(1)) * 1024**power


class _Again(Exception):
    """A step failed in a way another try may fix (after asking the server what arrived)."""


@dataclass
class _Position:
    """The upload bar, driven by absolute positions (a resume moves it back or forth)."""

    bar: Any
    at: int = 0

    def to(self, position: int) -> None:
        self.bar.advance(position - self.bar.done)
        self.at = position


def _file_chunks(
    path: Path, offset: int, length: int, moved: Callable[[int], None]
) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(offset)
        left = length
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise ClientError(
                    f"{path} shrank while it was being uploaded; nothing was imported"
                )
            left -= len(chunk)
            yield chunk
            moved(len(chunk))


class DirectUpload:
    """One file through an upload session; :meth:`run` returns the import job's view."""

    def __init__(
        self,
        service: Service,
        out: Output,
        path: Path,
        *,
        retries: int = RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.out = out
        self.path = path
        self.size = path.stat().st_size
        self.retries = retries
        self.sleep = sleep
        self.failures = 0
        self.best = -1

    # ------------------------------------------------------------------ the steps

    def run(self, fields: dict[str, str], idempotency_key: str | None) -> dict[str, Any]:
        digest = self._digest()
        body = {"file_name": self.path.name, "size": self.size, "sha256": digest}
        view = self._retrying(
            lambda: self.service.call("POST", "/v1/uploads", f"uploading {self.path}", json=body)
        )
        upload_id = str(view["upload_id"])
        self._progressed(int(view["received_bytes"]))
        with self.out.transfer("upload", self.size) as bar:
            position = _Position(bar)
            view = self._send(view, position)
            bar.finish()
        key = idempotency_key or f"bulkio-cli-{uuid.uuid4()}"
        request: dict[str, Any] = {"upload_id": upload_id, **fields}
        return dict(
            self._retrying(
                lambda: self.service.call(
                    "POST",
                    "/v1/imports",
                    f"importing upload {upload_id}",
                    json=request,
                    headers={"Idempotency-Key": key},
                )
            )
        )

    def _digest(self) -> str:
        digest = hashlib.sha256()
        with self.out.transfer("checksum", self.size) as bar, self.path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                bar.advance(len(chunk))
            bar.finish()
        return digest.hexdigest()

    def _send(self, view: dict[str, Any], position: _Position) -> dict[str, Any]:
        """Send what is missing and complete, round after round; the completed upload."""
        upload_id = str(view["upload_id"])
        while True:
            try:
                status = view["status"]
                if status in ("completed", "imported"):
                    return view
                if status == "rejected":
                    raise ClientError(f"upload {upload_id} was rejected: {view.get('error')}")
                position.to(int(view["received_bytes"]))
                if status == "open":
                    if view["storage"] == "s3":
                        parts = self._put_parts(view, position)
                        body: dict[str, Any] = {"parts": parts}
                    else:
                        self._append(view, position)
                        body = {}
                    return dict(
                        self._call(
                            "POST",
                            f"/v1/uploads/{upload_id}/complete",
                            f"completing upload {upload_id}",
                            json=body,
                            timeout=httpx.Timeout(COMPLETE_TIMEOUT, connect=10.0),
                        )
                    )
                raise _Again(f"upload {upload_id} is being completed")  # completing: wait
            except _Again as exc:
                self._wait(exc)
            view = self._retrying(
                lambda: self.service.call(
                    "GET", f"/v1/uploads/{upload_id}", f"reading upload {upload_id}"
                )
            )
            self._progressed(int(view["received_bytes"]))

    def _put_parts(self, view: dict[str, Any], position: _Position) -> list[dict[str, Any]]:
        """PUT every part that has not arrived; every part's number and ETag."""
        part_size = int(view["part_size"])
        parts = view["parts"]
        done = {int(p["part_number"]): p["etag"] for p in parts if p.get("etag")}
        with self.service.anonymous() as storage:
            for part in parts:
                number = int(part["part_number"])
                if number in done:
                    continue
                if not part.get("url"):
                    raise _Again(f"part {number} has no URL yet")
                offset, length = (number - 1) * part_size, int(part["size"])
                chunks = _file_chunks(
                    self.path, offset, length, lambda n: position.to(position.at + n)
                )
                res = self._storage_call(
                    storage,
                    "PUT",
                    str(part["url"]),
                    f"sending part {number}",
                    content=chunks,
                    headers={"Content-Length": str(length)},
                )
                etag = res.headers.get("etag")
                if not etag:
                    raise ClientError(f"storage answered part {number} without an ETag")
                done[number] = etag
        return [{"part_number": n, "etag": done[n]} for n in sorted(done)]

    def _append(self, view: dict[str, Any], position: _Position) -> None:
        offset = int(view["received_bytes"])
        if offset >= self.size:
            return
        chunks = _file_chunks(
            self.path, offset, self.size - offset, lambda n: position.to(position.at + n)
        )
        with self.service.anonymous() as data:
            self._storage_call(
                data,
                "PATCH",
                str(view["data_url"]),
                f"sending {self.path} from byte {offset}",
                content=chunks,
                headers={
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(self.size - offset),
                },
            )

    # ------------------------------------------------------------------ retries

    def _call(self, method: str, path: str, what: str, **kw: Any) -> Any:
        """An API call whose passing failures become :class:`_Again`."""
        try:
            return self.service.call(method, path, what, **kw)
        except Unreachable as exc:
            raise _Again(str(exc)) from exc
        except ApiError as exc:
            if exc.status in PASSING and exc.status != 403:
                raise _Again(f"{what}: {exc.detail}") from exc
            raise

    def _storage_call(
        self, client: httpx.Client, method: str, url: str, what: str, **kw: Any
    ) -> httpx.Response:
        """A request to storage (S3) or to the data URL; passing failures as :class:`_Again`."""
        try:
            res = client.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise _Again(f"{what}: the connection broke ({exc})") from exc
        try:
            return check(res)
        except ApiError as exc:
            if exc.status in PASSING:  # 403 from S3: its URL expired
                raise _Again(f"{what}: {exc.detail}") from exc
            raise

    def _retrying(self, step: Callable[[], Any]) -> Any:
        """``step`` until it answers; network errors and passing statuses are tried again."""
        while True:
            try:
                return step()
            except Unreachable as exc:
                self._wait(_Again(str(exc)))
            except ApiError as exc:
                if exc.status not in PASSING or exc.status == 403:
                    raise
                self._wait(_Again(exc.detail), exc.retry_after)

    def _progressed(self, received: int) -> None:
        """More bytes arrived than at any earlier failure: the count of failures starts again."""
        if received > self.best:
            self.best, self.failures = received, 0

    def _wait(self, exc: _Again, retry_after: float | None = None) -> None:
        """Count a failure, give up past :attr:`retries`, else sleep before the next try."""
        self.failures += 1
        if self.failures > self.retries:
            raise ClientError(f"gave up after {self.retries} tries in a row: {exc}") from exc
        delay = min(FIRST_WAIT * 2 ** (self.failures - 1), LONGEST_WAIT)
        delay = max(delay, retry_after or 0.0)
        self.out.say(f"{exc}; trying again in {delay:.1f} s (attempt {self.failures + 1})")
        self.sleep(delay)
