"""Helpers of the upload-session tests (test_uploads_local.py, test_uploads_s3.py,
test_cli_uploads.py)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from engine.client.main import main
from tests.support.service import Bulkio
from tests.support.waits import wait_until

__all__ = [
    "CutOnce",
    "check_import",
    "cut_patch",
    "import_upload",
    "in_process",
    "open_upload",
    "settled_offset",
    "sha256_of",
]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_upload(
    service: Bulkio, path: Path, data: bytes, *, sha256: str | None = None, client: Any = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"file_name": path.name, "size": len(data)}
    body["sha256"] = sha256 if sha256 is not None else sha256_of(data)
    res = (client or service.client).post("/v1/uploads", json=body)
    assert res.status_code == 201, res.text
    view = res.json()
    assert res.headers["location"] == f"/v1/uploads/{view['upload_id']}"
    return view  # type: ignore[no-any-return]


def cut_patch(url: str, offset: int, body: bytes, send: int) -> None:
    """PATCH ``body`` to a data URL announcing its whole length, send only its first ``send``
    bytes, then close the connection (a client whose network broke half way)."""
    target = httpx.URL(url)
    head = (
        f"PATCH {target.raw_path.decode()} HTTP/1.1\r\n"
        f"Host: {target.host}:{target.port}\r\n"
        f"Upload-Offset: {offset}\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((target.host, target.port or 80)) as sock:
        sock.sendall(head + body[:send])


def settled_offset(url: str, timeout: float = 30) -> int:
    """The offset of a local upload once no request is appending to it any more: an empty
    PATCH at the offset HEAD tells succeeds only when it gets the upload's lock."""
    busy = [""]
    with httpx.Client(timeout=10) as anonymous:

        def settled() -> tuple[int] | None:  # a tuple: offset 0 is an answer too
            head = anonymous.head(url)
            assert head.status_code == 200, head.text
            offset = int(head.headers["upload-offset"])
            res = anonymous.patch(url, headers={"Upload-Offset": str(offset)}, content=b"")
            if res.status_code == 204:
                return (int(res.headers["upload-offset"]),)
            assert res.status_code == 409, res.text
            busy[0] = res.text
            return None

        return wait_until(settled, timeout, 0.05, lambda: f"the upload to settle: {busy[0]}")[0]


def import_upload(service: Bulkio, upload_id: str, **fields: Any) -> httpx.Response:
    return service.client.post("/v1/imports", json={"upload_id": upload_id, **fields})


def check_import(service: Bulkio, job: dict[str, Any], expected: Any) -> None:
    """The job imported exactly what the generator planted: counts and every error row."""
    assert job["status"] == "completed", job
    assert job["total_records"] == job["processed"] == expected.total_records
    assert (job["successful"], job["failed"]) == (expected.successful, expected.failed)
    res = service.error_report(job["job_id"], "ndjson")
    assert res.status_code == 200, res.text
    errors = [json.loads(line) for line in res.text.splitlines() if line]
    got = sorted((e["row"], e["line"], e["field"], e["code"]) for e in errors)
    assert got == sorted(tuple(e) for e in expected.errors)


class CutOnce(httpx.BaseTransport):
    """httpx's transport, but the first request matching ``method`` and ``marker`` loses its
    connection after ``after`` bytes of its body went out. Records (method, URL, headers) of
    every request."""

    def __init__(self, method: str, marker: str, after: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.method, self.marker, self.after = method, marker, after
        self.cut = False
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, str(request.url), dict(request.headers)))
        if self.cut or request.method != self.method or self.marker not in str(request.url):
            return self.inner.handle_request(request)
        self.cut = True
        body = request.stream
        assert isinstance(body, httpx.SyncByteStream)

        def broken() -> Iterator[bytes]:
            sent = 0
            for chunk in body:
                if sent + len(chunk) >= self.after:
                    yield chunk[: self.after - sent]
                    raise httpx.WriteError("injected: the network broke")
                sent += len(chunk)
                yield chunk

        cut = httpx.Request(
            request.method, request.url, headers=request.headers, stream=_Stream(broken())
        )
        return self.inner.handle_request(cut)

    def close(self) -> None:
        self.inner.close()


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks


def in_process(service: Bulkio, transport: httpx.BaseTransport, *args: str) -> tuple[int, Any, str]:
    """``bulkio ARGS`` in this process over ``transport``: (exit code, stdout's JSON, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(
        list(args),
        console=Console(file=err, width=200, force_terminal=False),
        transport=transport,
        stdout=out,
        environ={"BULKIO_URL": f"http://127.0.0.1:{service.port}", "BULKIO_TOKEN": service.token},
    )
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else None, err.getvalue()
