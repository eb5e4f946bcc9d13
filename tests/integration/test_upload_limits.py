"""Caps, end to end (issue #5), through a second service with small limits (its own database and
queue, so neither service's workers or reconciler touch the other's jobs): an oversize upload
gets 413 *while streaming* (the answer arrives although most of the declared body was never
sent), leaves no object behind and no memory growth; an upload of exactly the cap is accepted;
a gzip bomb fails its job with worker memory bounded; an overlong record fails its job.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.database import migrated_database
from tests.support.handmade import GOOD, HEADER
from tests.support.servers import PostgresServer
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

UPLOAD_CAP = 1024 * 1024
DECOMPRESSED_CAP = 2 * 1024 * 1024
RECORD_CAP = 4096


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server, "bulkio_capped")


@pytest.fixture(scope="module")
def capped(
    database_url: str, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bulkio]:
    """A second bulkio with small caps, on its own database and queue."""
    work = tmp_path_factory.mktemp("capped")
    service = Bulkio(
        {
            "BULKIO_DATABASE_URL": database_url,
            "BULKIO_REDIS_URL": redis_server.url(),
            "BULKIO_STORAGE_URL": f"file://{work / 'objects'}",
            "BULKIO_QUEUE_NAME": "bulkio-capped",
            "BULKIO_MAX_UPLOAD_BYTES": str(UPLOAD_CAP),
            "BULKIO_MAX_DECOMPRESSED_BYTES": str(DECOMPRESSED_CAP),
            "BULKIO_MAX_RECORD_BYTES": str(RECORD_CAP),
            "BULKIO_SIGNING_SECRET": "test-secret",
            "BULKIO_RECONCILE_SECONDS": "1",
        },
        work,
        workers=1,
    )
    yield service
    service.stop()


def _group_rss_kib(pgid: int) -> int:
    """Resident memory of every process in a process group (granian forks its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _stream_upload(service: Bulkio, head: bytes, body: Iterator[bytes]) -> tuple[bytes, int]:
    """Send a request head, then body pieces until the server answers; return (answer, bytes
    of body sent). The server must answer before the body ends for a streamed check."""
    sent = 0
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(head)
        for piece in body:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(piece)
            except OSError:  # the server answered and closed: stop sending
                break
            sent += len(piece)
        answer = b""
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            readable, _, _ = select.select([sock], [], [], max(deadline - time.monotonic(), 0))
            if not readable:
                break
            try:
                piece = sock.recv(65536)
            except OSError:
                break
            if not piece:
                break
            answer += piece
    return answer, sent


def _http_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a raw HTTP/1.1 answer with a Content-Length body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, body[: int(headers["content-length"])]


def _pieces(total: int, first: bytes = b"", size: int = 64 * 1024) -> Iterator[bytes]:
    yield first
    filler = (GOOD + b"\n") * (size // (len(GOOD) + 1))
    sent = 0
    while sent < total:
        yield filler
        sent += len(filler)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.parametrize("framing", ["raw", "multipart", "chunked"])
def test_an_oversize_upload_is_refused_with_413_while_streaming(
    capped: Bulkio, framing: str
) -> None:
    declared = 1024**3  # 1 GiB announced; a server that buffered would wait for all of it
    target = "/v1/imports?resource=users&format=csv"
    headers = f"Host: x\r\nAuthorization: Bearer {capped.token}\r\n"
    first = b""
    body: Iterator[bytes]
    if framing == "multipart":
        headers += "Content-Type: multipart/form-data; boundary=XyZ\r\n"
        first = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="u.csv"\r\n\r\n'
    if framing == "chunked":
        headers += "Transfer-Encoding: chunked\r\n"
        body = (b"%x\r\n%s\r\n" % (len(p), p) for p in _pieces(16 * UPLOAD_CAP) if p)
    else:
        headers += f"Content-Length: {declared}\r\n"
        body = _pieces(16 * UPLOAD_CAP, first)
    root = Path(capped.env["BULKIO_STORAGE_URL"].removeprefix("file://"))
    before_files = _files(root)
    assert capped.api is not None
    rss_before = _group_rss_kib(capped.api.pid)
    answer, sent = _stream_upload(capped, f"POST {target} HTTP/1.1\r\n{headers}\r\n".encode(), body)
    status, head, content = _http_answer(answer)
    assert status == 413, answer[:300]
    assert head["content-type"].startswith("application/problem+json")
    problem = json.loads(content)
    assert problem["status"] == 413
    assert problem["detail"] == (
        f"the upload is larger than {UPLOAD_CAP} bytes (BULKIO_MAX_UPLOAD_BYTES)"
    )
    assert sent < 8 * UPLOAD_CAP < declared  # answered long before the body could end
    time.sleep(0.5)
    assert _files(root) == before_files, "a refused upload must leave no object behind"
    assert _group_rss_kib(capped.api.pid) - rss_before < 64 * 1024
    assert capped.client.get("/health").status_code == 200


def test_an_upload_of_exactly_the_cap_is_accepted(capped: Bulkio) -> None:
    client = capped.client
    line = GOOD + b"\n"
    data = HEADER + line * ((UPLOAD_CAP - len(HEADER)) // len(line))
    data += b" " * (UPLOAD_CAP - len(data) - 1) + b"\n"
    assert len(data) == UPLOAD_CAP
    ok = client.post("/v1/imports", params={"resource": "users", "format": "csv"}, content=data)
    assert ok.status_code == 202, ok.text
    capped.wait(ok.json()["job_id"])


def test_a_gzip_bomb_fails_its_job_and_worker_memory_stays_bounded(capped: Bulkio) -> None:
    client = capped.client
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = (GOOD + b"\n") * (1024 * 1024 // (len(GOOD) + 1))
    bomb = squeeze.compress(HEADER) + b"".join(squeeze.compress(block) for _ in range(64))
    bomb += squeeze.flush()
    assert len(bomb) < UPLOAD_CAP  # ~64 MiB of CSV in well under 1 MiB
    worker = capped.workers[0]
    peak_before = _peak_rss_kib(worker.pid)
    res = client.post("/v1/imports", data={"resource": "users"}, files={"file": ("u.csv.gz", bomb)})
    assert res.status_code == 202, res.text
    job = capped.wait(res.json()["job_id"], kind="jobs")
    assert job["status"] == "failed", job
    assert job["error"] == (
        f"the gzip file expands to more than {DECOMPRESSED_CAP} bytes "
        "(BULKIO_MAX_DECOMPRESSED_BYTES); split it or raise the limit"
    )
    assert job["attempts"] == 1
    assert worker.alive()
    assert _peak_rss_kib(worker.pid) - peak_before < 128 * 1024, "decompression is not bounded"


def test_an_overlong_record_fails_its_job(capped: Bulkio) -> None:
    client = capped.client
    data = HEADER + GOOD + b"\n" + b",x@y.zz," + b"n" * (2 * RECORD_CAP) + b",admin,2024\n"
    res = client.post("/v1/imports", data={"resource": "users"}, files={"file": ("u.csv", data)})
    job = capped.wait(res.json()["job_id"], kind="jobs")
    assert job["status"] == "failed", job
    assert job["error"].startswith(
        f"a record starting on line 3 is longer than {RECORD_CAP} bytes (BULKIO_MAX_RECORD_BYTES)"
    )
