"""Imports from a URL (``source_url``) end to end: the API creates the job at once, a real worker
fetches the file from an HTTP server running in this test (on loopback, which
BULKIO_URL_IMPORT_ALLOW_PRIVATE lets through) into storage and imports it exactly like an upload.

Also: redirects followed, a redirect to a forbidden address refused in the worker, each failure
naming its cause (remote status, size announced and streamed, a stalled and a trickling server,
too many redirects, an unknown format), cancel and shutdown during a fetch, no second fetch once
the file is stored, idempotency, owners. Under the session's strict service (allow-private off):
refusals at request time with a ``reason``, and again in the worker, without a connection."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine import jobs
from tests.support.database import empty, migrated_database
from tests.support.datafiles import make
from tests.support.servers import PostgresServer
from tests.support.service import TEST_ENV, Bulkio, make_token

pytestmark = pytest.mark.integration

MAX_BYTES = 2 * 1024 * 1024
URL_ENV = {
    "BULKIO_URL_IMPORT_ALLOW_PRIVATE": "true",
    "BULKIO_URL_IMPORT_TIMEOUT_SECONDS": "2",
    # Longer than the lease (5 s): a fetch that lasts until it must heartbeat to keep the job.
    "BULKIO_URL_IMPORT_DEADLINE_SECONDS": "8",
    "BULKIO_MAX_UPLOAD_BYTES": str(MAX_BYTES),
}

# ------------------------------------------------------------------ the remote server

Route = Callable[["_Handler"], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    remote: Remote

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.remote.seen.append(path)
        self.remote.arrived.set()
        route = self.remote.routes.get(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the worker cut it
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                route(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Remote:
    """An HTTP server on loopback in a thread of this test; answers set per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[str] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        handler = type("Handler", (_Handler,), {"remote": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def remote() -> Iterator[Remote]:
    server = Remote()
    yield server
    server.close()


def body(data: bytes, content_type: str | None = None) -> Route:
    def answer(h: _Handler) -> None:
        h.send_response(200)
        if content_type:
            h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return answer


def chunked(part: bytes, count: int) -> Route:
    def answer(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/csv")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(count):
            h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    return answer


def announce(length: int) -> Route:
    """Says the file is ``length`` bytes, then sends what it can until the worker hangs up."""

    def answer(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        h.wfile.write(b"id,email\n")
        h.wfile.flush()
        h.remote.release.wait(30)
        h.close_connection = True

    return answer


def redirect(location: str) -> Route:
    def answer(h: _Handler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def trickle(every: float) -> Route:
    """A CSV header, then one byte every ``every`` seconds until released: never silent for the
    timeout, never done."""

    def answer(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(10**6))
        h.end_headers()
        h.wfile.write(b"id,email,name,role,active,created_at,updated_at\n")
        h.wfile.flush()
        while not h.remote.release.wait(every):
            h.wfile.write(b" ")
            h.wfile.flush()
        h.close_connection = True

    return answer


def stall() -> Route:
    def answer(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"id,email\n")
        h.wfile.flush()
        h.remote.release.wait(30)
        h.close_connection = True

    return answer


# ------------------------------------------------------------------ the service (allow-private)


@pytest.fixture(scope="module")
def urls_database_url(pg_server: PostgresServer) -> Iterator[str]:
    """The database of this module's service (the session's service has its own)."""
    yield from migrated_database(pg_server, "bulkio_url_imports")


@pytest.fixture(scope="module")
def urls_service(
    urls_database_url: str, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bulkio]:
    work = tmp_path_factory.mktemp("url-imports")
    env = {
        **TEST_ENV,
        **URL_ENV,
        "BULKIO_DATABASE_URL": urls_database_url,
        # Apart from the session's service: its own Redis database and queue.
        "BULKIO_REDIS_URL": redis_server.url(8),
        "BULKIO_QUEUE_NAME": "url-imports-test",
        "BULKIO_STORAGE_URL": f"file://{work / 'objects'}",
        "BULKIO_METRICS_DIR": str(work / "metrics"),
    }
    service = Bulkio(env, work, workers=1)
    yield service
    service.stop()


@pytest.fixture
def urls(urls_service: Bulkio) -> Iterator[Bulkio]:
    with _db(urls_service) as conn:
        empty(conn)
    urls_service.revive_workers()
    yield urls_service
    urls_service.close_clients()


def _db(service: Bulkio) -> psycopg.Connection[Any]:
    return psycopg.connect(service.env["BULKIO_DATABASE_URL"], autocommit=True)


def _start(
    service: Bulkio, source_url: str, resource: str = "users", **extra: Any
) -> dict[str, Any]:
    res = service.client.post(
        "/v1/imports", json={"resource": resource, "source_url": source_url, **extra}
    )
    assert res.status_code == 202, res.text
    return res.json()  # type: ignore[no-any-return]


def _failed(service: Bulkio, source_url: str, **extra: Any) -> str:
    job = service.wait(_start(service, source_url, **extra)["job_id"])
    assert job["status"] == "failed", job
    return str(job["error"])


def _report(service: Bulkio, job_id: str) -> list[tuple[int, int, str | None, str]]:
    res = service.error_report(job_id)
    assert res.status_code == 200, res.text
    rows = [json.loads(line) for line in res.text.splitlines() if line]
    return sorted((e["row"], e["line"], e["field"], e["code"]) for e in rows)


def _exact(service: Bulkio, job: dict[str, Any], expected: Any) -> None:
    assert job["status"] == "completed", job
    assert job["total_records"] == job["processed"] == expected.total_records
    assert (job["successful"], job["failed"]) == (expected.successful, expected.failed)
    assert _report(service, job["job_id"]) == sorted(tuple(e) for e in expected.errors)
    with _db(service) as conn:
        ids = sorted(str(r[0]) for r in conn.execute("SELECT id FROM users"))
    assert ids == sorted(expected.valid_id_list())


def _object(service: Bulkio, job_id: str) -> Path:
    return service.workdir / "objects" / "imports" / job_id / "source"


# ------------------------------------------------------------------ imports that work


def test_a_url_import_is_created_at_once_and_imports_exactly(
    urls: Bulkio, remote: Remote, datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 3000, seed=41)
    data = path.read_bytes()
    remote.routes["/exports/users.csv"] = body(data, "text/csv")
    url = remote.url("/exports/users.csv?X-Amz-Signature=abc")
    created = _start(urls, url)
    assert created["status"] == "queued" and created["format"] == "csv"
    assert created["file_name"] == "users.csv"
    assert created["options"] == {"source_url": url}
    job = urls.wait(created["job_id"])
    _exact(urls, job, expected)
    assert job["progress"] == {"bytes_read": len(data), "total_bytes": len(data), "percent": 100.0}
    assert remote.seen == ["/exports/users.csv"]
    assert _object(urls, job["job_id"]).read_bytes() == data  # imported from the stored object


@pytest.mark.parametrize("how", ["form", "query"])
def test_source_url_as_a_form_field_or_a_query_parameter(
    urls: Bulkio, remote: Remote, datadir: Path, how: str
) -> None:
    path, expected = make(datadir, "users", "ndjson", 500, seed=42)
    remote.routes["/u.ndjson"] = body(path.read_bytes())
    fields = {"resource": "users", "source_url": remote.url("/u.ndjson"), "max_errors": "1000"}
    if how == "form":  # multipart, without a file
        res = urls.client.post("/v1/imports", files={k: (None, v) for k, v in fields.items()})
    else:
        res = urls.client.post("/v1/imports", params=fields)
    assert res.status_code == 202, res.text
    assert res.json()["options"] == {"max_errors": 1000, "source_url": fields["source_url"]}
    _exact(urls, urls.wait(res.json()["job_id"]), expected)


def test_the_format_from_the_content_type_else_the_job_fails_asking_for_it(
    urls: Bulkio, remote: Remote, datadir: Path
) -> None:
    path, expected = make(datadir, "users", "ndjson", 300, seed=43)
    remote.routes["/export"] = body(path.read_bytes(), "application/x-ndjson; charset=utf-8")
    remote.routes["/blob"] = body(path.read_bytes(), "application/octet-stream")
    created = _start(urls, remote.url("/export?id=7"))
    assert created["format"] == "auto"  # until the worker has the answer
    job = urls.wait(created["job_id"])
    assert job["format"] == "ndjson"
    _exact(urls, job, expected)

    error = _failed(urls, remote.url("/blob"))
    assert error.startswith(
        f"cannot tell the format of {remote.url('/blob')}: its path has no known extension "
        "(.csv, .ndjson, .json"
    )
    assert ") and the answer has Content-Type 'application/octet-stream'; pass format=csv|" in error
    job = urls.wait(_start(urls, remote.url("/blob"), format="ndjson")["job_id"])
    assert (job["status"], job["successful"]) == ("completed", expected.successful)


def test_redirects_are_followed_and_each_hop_checked_again(
    urls: Bulkio, remote: Remote, datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 500, seed=44)
    remote.routes["/files/users.csv"] = body(path.read_bytes())
    remote.routes["/start"] = redirect("/hop")
    remote.routes["/hop"] = redirect(remote.url("/files/users.csv"))
    job = urls.wait(_start(urls, remote.url("/start"), format="csv")["job_id"])
    _exact(urls, job, expected)
    assert remote.seen == ["/start", "/hop", "/files/users.csv"]

    # Allow-private lets loopback through, never link-local (the cloud's metadata service).
    remote.routes["/evil.csv"] = redirect("http://169.254.169.254/latest/meta-data/")
    assert _failed(urls, remote.url("/evil.csv")) == (
        "redirect 1 (to http://169.254.169.254/latest/meta-data/) was refused: 169.254.169.254 "
        "is a link-local address (where cloud metadata services answer); refused"
    )
    for n in range(8):
        remote.routes[f"/loop{n}.csv"] = redirect(f"/loop{n + 1}.csv")
    error = _failed(urls, remote.url("/loop0.csv"))
    assert error.startswith("more than 5 redirects (the limit)"), error


# ------------------------------------------------------------------ failures, named


def test_a_remote_404_fails_the_job_naming_it(urls: Bulkio, remote: Remote) -> None:
    error = _failed(urls, remote.url("/missing.csv?token=s3cr3t"))
    assert error == f"{remote.url('/missing.csv')} answered HTTP 404 Not Found"


def test_too_large_announced_or_streamed_fails_and_stores_nothing(
    urls: Bulkio, remote: Remote
) -> None:
    remote.routes["/announced.csv"] = announce(MAX_BYTES + 1)
    remote.routes["/streamed.csv"] = chunked(b"x" * 65536, MAX_BYTES // 65536 + 2)
    job = urls.wait(_start(urls, remote.url("/announced.csv"))["job_id"])
    assert job["error"] == (
        f"{remote.url('/announced.csv')} is {MAX_BYTES + 1} bytes (Content-Length), more than "
        f"BULKIO_MAX_UPLOAD_BYTES ({MAX_BYTES})"
    )
    assert not _object(urls, job["job_id"]).parent.exists()
    job = urls.wait(_start(urls, remote.url("/streamed.csv"))["job_id"])
    assert job["error"] == (
        f"{remote.url('/streamed.csv')} sent more than BULKIO_MAX_UPLOAD_BYTES ({MAX_BYTES}) bytes"
    )
    folder = _object(urls, job["job_id"]).parent  # the aborted upload left nothing behind
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_stalled_remote_fails_at_the_timeout(urls: Bulkio, remote: Remote) -> None:
    remote.routes["/stalled.csv"] = stall()
    error = _failed(urls, remote.url("/stalled.csv"))
    assert error == (
        f"{remote.url('/stalled.csv')} sent nothing for 2 s (BULKIO_URL_IMPORT_TIMEOUT_SECONDS)"
    )


def test_a_trickling_remote_fails_at_the_deadline_keeping_its_lease(
    urls: Bulkio, remote: Remote
) -> None:
    """8 s of a byte every 0.5 s: past the 5 s lease, so the fetch extends it (one attempt)."""
    remote.routes["/slow.csv"] = trickle(0.5)
    job = urls.wait(_start(urls, remote.url("/slow.csv"))["job_id"])
    assert (job["status"], job["attempts"]) == ("failed", 1), job
    assert job["error"] == "the fetch took longer than 8 s (BULKIO_URL_IMPORT_DEADLINE_SECONDS)"


# ------------------------------------------------------------------ cancel, shutdown, retry


def test_a_cancel_stops_a_fetch_in_progress(urls: Bulkio, remote: Remote) -> None:
    remote.routes["/slow.csv"] = trickle(0.2)
    job_id = _start(urls, remote.url("/slow.csv"))["job_id"]
    assert remote.arrived.wait(30), urls.logs()
    assert urls.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = urls.wait(job_id)
    assert (job["status"], job["error"], job["processed"]) == ("cancelled", None, 0), job
    assert not _object(urls, job_id).exists()


def test_a_shutdown_during_the_fetch_hands_the_job_back_and_the_next_worker_fetches_again(
    urls: Bulkio, remote: Remote, datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 2000, seed=45)
    remote.routes["/users.csv"] = trickle(0.2)
    job_id = _start(urls, remote.url("/users.csv"))["job_id"]
    assert remote.arrived.wait(30), urls.logs()
    [worker] = urls.workers
    worker.signal(signal.SIGTERM)
    # The pulse cuts the fetch at once; without it the worker would wait for the deadline.
    assert worker.wait(20) == 0, urls.logs()
    worker.stop()
    urls.workers.remove(worker)
    with _db(urls) as conn:
        row = conn.execute(
            "SELECT status, lease_owner FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row == ("queued", None)
    assert not _object(urls, job_id).exists()  # the partial fetch stored nothing
    remote.routes["/users.csv"] = body(path.read_bytes())
    urls.start_worker()
    _exact(urls, urls.wait(job_id), expected)
    assert remote.seen == ["/users.csv", "/users.csv"]  # fetched again, from the start


def test_a_retried_job_whose_file_is_stored_does_not_fetch_again(
    urls: Bulkio, remote: Remote, datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 1500, seed=46)
    remote.routes["/users.csv"] = body(path.read_bytes())
    job_id = _start(urls, remote.url("/users.csv"))["job_id"]
    _exact(urls, urls.wait(job_id), expected)
    # As if its message came again after the fetch (a retry): queued, long untouched, so the
    # reconciler enqueues it; the worker resumes from its checkpoint (here: the end).
    with _db(urls) as conn:
        conn.execute(
            "UPDATE jobs SET status = 'queued', finished_at = NULL, "
            "updated_at = now() - interval '1 hour' WHERE id = %s",
            (job_id,),
        )
    job = urls.wait(job_id)
    _exact(urls, job, expected)
    assert job["attempts"] == 2
    assert remote.seen == ["/users.csv"]


# ------------------------------------------------------------------ idempotency and owners


def test_idempotency_includes_the_url(urls: Bulkio, remote: Remote, datadir: Path) -> None:
    path, _ = make(datadir, "users", "csv", 100, seed=47)
    remote.routes["/a.csv"] = body(path.read_bytes())
    body_a = {"resource": "users", "source_url": remote.url("/a.csv")}
    headers = {"Idempotency-Key": "url-import-1"}
    first = urls.client.post("/v1/imports", json=body_a, headers=headers)
    again = urls.client.post("/v1/imports", json=body_a, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202), again.text
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = urls.client.post(
        "/v1/imports", json={**body_a, "source_url": remote.url("/b.csv")}, headers=headers
    )
    assert other.status_code == 422, other.text
    urls.wait(first.json()["job_id"])


def test_another_owner_cannot_see_the_job(urls: Bulkio, remote: Remote, datadir: Path) -> None:
    path, _ = make(datadir, "users", "csv", 100, seed=48)
    remote.routes["/a.csv"] = body(path.read_bytes())
    job_id = _start(urls, remote.url("/a.csv"))["job_id"]
    urls.wait(job_id)
    token = make_token(urls.env["BULKIO_DATABASE_URL"], "someone-else", ["imports:read"])
    stranger = urls.client_for(token)
    for route in (f"/v1/imports/{job_id}", f"/v1/jobs/{job_id}", f"/v1/imports/{job_id}/errors"):
        assert stranger.get(route).status_code == 404, route


# ------------------------------------------------------------------ the strict default


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket listening on loopback: a fetch that reached it would be accepted here."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://files.example.com/users.csv", "scheme"),
        ("http://127.0.0.1:{port}/users.csv", "scheme"),
        ("https://localhost:{port}/users.csv", "loopback"),
        ("https://127.0.0.1:{port}/users.csv", "loopback"),
        ("https://[::1]:{port}/users.csv", "loopback"),
        ("https://10.0.0.1/users.csv", "private"),
        ("https://172.16.0.1/users.csv", "private"),
        ("https://192.168.1.1/users.csv", "private"),
        ("https://[::ffff:10.0.0.1]/users.csv", "private"),
        ("https://169.254.169.254/users.csv", "link_local"),
        ("https://[fe80::1]/users.csv", "link_local"),
        ("https://100.64.0.1/users.csv", "shared"),
        ("https://224.0.0.1/users.csv", "multicast"),
        ("https://[ff02::1]/users.csv", "multicast"),
        ("https://0.0.0.0:{port}/users.csv", "unspecified"),
        ("https://240.0.0.1/users.csv", "reserved"),
        ("https://user:pw@files.example.com/users.csv", "credentials"),
        ("https://no-such-host.invalid/users.csv", "unresolvable"),
    ],
)
def test_refused_at_request_time_naming_the_reason(
    service: Bulkio, db: psycopg.Connection[Any], listener: socket.socket, url: str, reason: str
) -> None:
    source = url.format(port=listener.getsockname()[1])
    res = service.client.post("/v1/imports", json={"resource": "users", "source_url": source})
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    problem = res.json()
    assert problem["reason"] == reason and problem["detail"].startswith("source_url refused: ")
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert _connections(listener) == 0


def test_the_refusal_names_the_address_a_name_resolves_to(service: Bulkio) -> None:
    res = service.client.post(
        "/v1/imports", params={"resource": "users", "source_url": "https://localhost/u.csv"}
    )
    assert res.status_code == 400, res.text
    assert "localhost resolves to" in res.json()["detail"]
    assert "is a loopback address; refused" in res.json()["detail"]


@pytest.mark.parametrize(
    ("request_kw", "needle"),
    [
        (
            {"data": {"resource": "users", "source_url": "https://h.example/u.csv"},
             "files": {"file": ("u.csv", b"id\n1\n")}},
            "send one of a file, an upload_id or a source_url",
        ),
        (
            {"params": {"resource": "users", "source_url": "https://h.example/u.csv"},
             "content": b"id\n1\n"},
            "send one of a file, an upload_id or a source_url",
        ),
        ({"json": {"resource": "users"}}, "'source_url'"),
        ({"json": {"resource": "users", "source_url": ""}}, "'source_url'"),
        ({"json": {"resource": "users", "source_url": 5}}, "must start with https://"),
        ({"json": {"resource": "users", "source_url": "https://h.example/u.csv", "x": 1}}, "'x'"),
        ({"json": {"source_url": "https://h.example/u.csv"}}, "'resource' field is required"),
        (
            {"json": {"resource": "users", "source_url": "https://h.example/" + "a" * 8200}},
            "longer than 8192",
        ),
        (
            {"json": {"resource": "users", "source_url": "https://h.example/u", "format": "xls"}},
            "format must be one of",
        ),
    ],
)  # fmt: skip
def test_bad_requests_are_400(
    service: Bulkio, db: psycopg.Connection[Any], request_kw: dict[str, Any], needle: str
) -> None:
    res = service.client.post("/v1/imports", **request_kw)
    assert res.status_code == 400, res.text
    assert needle in res.json()["detail"]
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_refused_again_in_the_worker_without_a_connection(
    service: Bulkio, db: psycopg.Connection[Any], listener: socket.socket
) -> None:
    """A job whose URL passed the API's check, and whose name now resolves to loopback (as if
    its DNS had changed since): written straight into the table, queued long ago, so the
    reconciler hands it to the worker."""
    job_id = jobs.new_job_id()
    url = f"https://localhost:{listener.getsockname()[1]}/users.csv"
    jobs.create(
        db,
        job_id=job_id,
        kind="import",
        resource="users",
        fmt="csv",
        mode="upsert",
        owner="tester",
        options={"source_url": url},
        file_name="users.csv",
        object_key=f"imports/{job_id}/source",
    )
    db.execute("UPDATE jobs SET updated_at = now() - interval '1 hour' WHERE id = %s", (job_id,))
    job = service.wait(job_id)
    assert job["status"] == "failed", job
    assert job["error"].startswith("the source URL was refused: localhost resolves to ")
    assert job["error"].endswith("is a loopback address; refused")
    assert _connections(listener) == 0


def test_csv_error_report_of_a_url_import(urls: Bulkio, remote: Remote, datadir: Path) -> None:
    """The error rows name the file's rows and lines as for an upload (CSV report too)."""
    path, expected = make(datadir, "users", "csv", 400, seed=49, defect_rate=0.2)
    remote.routes["/u.csv"] = body(path.read_bytes())
    job = urls.wait(_start(urls, remote.url("/u.csv"))["job_id"])
    res = urls.error_report(job["job_id"], "csv")
    rows = list(csv.DictReader(io.StringIO(res.text)))
    got = sorted((int(r["row"]), int(r["line"]), r["field"] or None, r["code"]) for r in rows)
    assert got == sorted(tuple(e) for e in expected.errors)
