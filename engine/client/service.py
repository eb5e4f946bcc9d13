"""The bulkio HTTP API as the client uses it: one httpx client with the token, problem+json
answers turned into :class:`ApiError` (401/403: :class:`NotAllowed`), transport failures into
:class:`Unreachable`, uploads and downloads streamed with a byte callback for progress bars.

Tests pass a real small transport (``httpx.MockTransport``) instead of patching anything.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from engine import __version__
from engine.client.config import Target, require_token
from engine.client.errors import ApiError, ClientError, NotAllowed, Unreachable
from engine.client.sse import Event, parse

#: Bytes read from a file per upload chunk, and per download chunk.
CHUNK = 1 << 20
#: Seconds to wait for a connection, and for an answer (an upload's 202 comes after the last
#: byte is stored, a streamed export's first byte after its query started).
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 120.0
EVENT_STREAM = "text/event-stream"

ByteCallback = Callable[[int], None]


class StreamUnavailable(ClientError):
    """Raised when the events route cannot stream (an older server, or one at its limit):
    the caller polls instead."""


def _problem(res: httpx.Response) -> str:
    """The ``detail`` of a problem+json answer, else the start of the body."""
    try:
        body = res.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    text = res.text.strip()
    reason = res.reason_phrase or "error"
    return f"HTTP {res.status_code} {reason}" + (f": {text[:300]}" if text else "")


def _retry_after(res: httpx.Response) -> float | None:
    raw = res.headers.get("retry-after", "")
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return None


def check(res: httpx.Response) -> httpx.Response:
    """The response, or the error it answers (a streamed body is read first)."""
    if res.status_code < 400:
        return res
    res.read()
    detail = _problem(res)
    if res.status_code in (401, 403):
        raise NotAllowed(res.status_code, detail)
    raise ApiError(res.status_code, detail, _retry_after(res))


def _quote(name: str) -> str:
    """A multipart ``filename`` parameter: quotes and line breaks escaped as browsers do."""
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class Upload:
    """A multipart/form-data body (the form fields, then ``file``) produced while the file is
    read: its length is known in advance, so it goes out with Content-Length, and
    ``on_bytes`` is told of every chunk of the file as httpx takes it."""

    def __init__(self, path: Path, fields: dict[str, str], on_bytes: ByteCallback) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.on_bytes = on_bytes
        self.boundary = "bulkio-" + secrets.token_hex(16)
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
            for name, value in fields.items()
        ]
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quote(path.name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        self.head = b"".join(parts)
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def headers(self) -> dict[str, str]:
        length = len(self.head) + self.size + len(self.tail)
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(length),
        }

    def body(self) -> Iterator[bytes]:
        yield self.head
        left = self.size
        with self.path.open("rb") as fh:
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    raise ClientError(
                        f"{self.path} shrank while it was being uploaded; nothing was imported"
                    )
                left -= len(chunk)
                yield chunk
                self.on_bytes(len(chunk))
        yield self.tail


class Service:
    """The API at ``target.url`` with ``target.token``."""

    def __init__(self, target: Target, transport: httpx.BaseTransport | None = None) -> None:
        self.target = target
        self.url = target.url
        headers = {"User-Agent": f"bulkio-cli/{__version__}", "Accept": "application/json"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self._transport = transport
        self.http = httpx.Client(
            base_url=target.url,
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def anonymous(self) -> httpx.Client:
        """A client without the token, on the same transport: for signed and presigned URLs
        (an upload's parts on S3, its data URL), which must not get the token."""
        return httpx.Client(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            transport=self._transport,
            headers={"User-Agent": f"bulkio-cli/{__version__}"},
        )

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Transport failures as :class:`Unreachable`, saying what was being done where."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise Unreachable(f"{what}: {self.url} did not answer in time ({exc})") from exc
        except httpx.ConnectError as exc:
            raise Unreachable(f"{what}: cannot connect to {self.url} ({exc})") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ClientError(f"{what}: bad URL {self.url!r} ({exc})") from exc
        except httpx.TransportError as exc:
            raise Unreachable(f"{what}: the connection to {self.url} broke ({exc})") from exc

    def call(self, method: str, path: str, what: str, **kw: Any) -> Any:
        """One JSON request; its JSON answer."""
        require_token(self.target)
        with self._talking(what):
            res = check(self.http.request(method, path, **kw))
        try:
            return res.json()
        except ValueError as exc:
            raise ClientError(f"{what}: {self.url} did not answer with JSON") from exc

    # ------------------------------------------------------------------ jobs

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/jobs/{job_id}", f"reading job {job_id}"))

    def export_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/exports/{job_id}", f"reading export job {job_id}"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/jobs/{job_id}/cancel", f"cancelling job {job_id}"))

    def jobs_page(self, params: dict[str, str]) -> dict[str, Any]:
        return dict(self.call("GET", "/v1/jobs", "listing jobs", params=params))

    def create_import(
        self,
        path: Path,
        fields: dict[str, str],
        on_bytes: ByteCallback,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        upload = Upload(path, fields, on_bytes)
        headers = upload.headers
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return dict(
            self.call(
                "POST", "/v1/imports", f"uploading {path}", content=upload.body(), headers=headers
            )
        )

    def create_export(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return dict(
            self.call("POST", "/v1/exports", "starting an export job", json=body, headers=headers)
        )

    @contextmanager
    def events(
        self,
        job_id: str,
        after: int,
        read_timeout: float,
        on_line: Callable[[], None] = lambda: None,
    ) -> Iterator[Iterator[Event]]:
        """The job's Server-Sent Events after ``after``; an empty stream when the job has ended
        and nothing follows (204). :class:`StreamUnavailable` when the server cannot stream.
        ``on_line`` is called for every line received, keep-alive comments included (a caller's
        deadline must pass while the stream only sends keep-alives)."""
        require_token(self.target)
        headers = {"Accept": EVENT_STREAM, "Last-Event-ID": str(after)}
        timeout = httpx.Timeout(CONNECT_TIMEOUT, read=max(read_timeout, 0.05))
        with (
            self._talking(f"following job {job_id}"),
            self.http.stream(
                "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
            ) as res,
        ):
            # 404/405: a server without the route (the caller read the job just before);
            # 429/503: streams are at their limit. Polling works in every case.
            if res.status_code in (404, 405, 406, 429, 501, 503):
                res.read()
                raise StreamUnavailable(_problem(res))
            check(res)
            if res.status_code == 204:
                yield iter(())
                return
            if not res.headers.get("content-type", "").startswith(EVENT_STREAM):
                raise StreamUnavailable("the events route did not answer with an event stream")
            yield parse(_ticking(res.iter_lines(), on_line))

    # ------------------------------------------------------------------ downloads

    def download(
        self,
        url: str,
        out: IO[bytes],
        on_start: Callable[[int | None], None],
        on_bytes: ByteCallback,
        what: str,
        params: dict[str, str] | None = None,
        authorized: bool = True,
    ) -> httpx.Headers:
        """Stream ``url`` (a path of the API, or with ``authorized=False`` a signed URL that
        must not get the token, e.g. a presigned S3 URL) into ``out``."""
        if authorized:
            require_token(self.target)
        client = (
            self.http
            if authorized
            else httpx.Client(
                timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
                transport=self._transport,
                headers={"User-Agent": f"bulkio-cli/{__version__}"},
            )
        )
        try:
            with self._talking(what), client.stream("GET", url, params=params) as res:
                check(res)
                length = res.headers.get("content-length")
                encoded = "content-encoding" in res.headers  # the length is not the file's
                on_start(int(length) if length and length.isdigit() and not encoded else None)
                for chunk in res.iter_bytes(CHUNK):
                    out.write(chunk)
                    on_bytes(len(chunk))
                return res.headers
        finally:
            if not authorized:
                client.close()


def _ticking(lines: Iterator[str], tick: Callable[[], None]) -> Iterator[str]:
    for line in lines:
        tick()
        yield line


def partial_path(target: Path) -> Path:
    """Where a download is written until it is complete (renamed then): beside the target."""
    return target.with_name(f".{target.name}.{os.getpid()}.part")
