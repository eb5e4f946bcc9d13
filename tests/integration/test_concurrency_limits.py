"""Per-token concurrency limits over real HTTP (engine/limits.py, api/limits.py): queued + running
jobs checked and taken atomically, concurrent uploads and streams capped across requests, readers
that stop reading cut off, slots freed when a request ends, its client goes away or its API
process dies.

The service here has its own database (no worker runs its jobs, so they stay queued and the
counts hold still) and small caps: 3 uploads, 1 stream, a 2 s stall bound, 3 s slots."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from engine import jobs
from engine.auth import create_token
from tests.support.database import empty, migrated_database
from tests.support.servers import PostgresServer, RedisServer
from tests.support.service import TEST_ENV, Bulkio
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

UPLOADS, STREAMS, STALL, SLOT_TTL = 3, 1, 2, 3
HEADER = b"id,email,name,role,created_at\n"
ROW = b"%s,u%d@example.com,U,reader,2024-01-01T00:00:00Z\n"
STREAM_APP = "bulkio-api-stream"


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server)


@pytest.fixture(scope="module")
def limited(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bulkio]:
    work = tmp_path_factory.mktemp("limits")
    with RedisServer() as redis:
        env = {
            **TEST_ENV,
            "BULKIO_DATABASE_URL": database_url,
            "BULKIO_REDIS_URL": redis.url(),
            "BULKIO_STORAGE_URL": f"file://{work / 'objects'}",
            "BULKIO_METRICS_DIR": str(work / "metrics"),
            "BULKIO_MAX_CONCURRENT_UPLOADS": str(UPLOADS),
            "BULKIO_MAX_CONCURRENT_STREAMS": str(STREAMS),
            "BULKIO_STREAM_STALL_SECONDS": str(STALL),
            "BULKIO_SLOT_TTL_SECONDS": str(SLOT_TTL),
        }
        service = Bulkio(env, work, workers=0)
        try:
            yield service
        finally:
            service.stop()


@pytest.fixture
def svc(limited: Bulkio, db: psycopg.Connection[Any]) -> Iterator[Bulkio]:
    empty(db)
    db.execute("TRUNCATE api_slots")
    yield limited
    limited.close_clients()


def token(db: psycopg.Connection[Any], owner: str, scopes: list[str], **limits: Any) -> Any:
    """(token id, secret) of a new token."""
    return create_token(db, owner, scopes, **limits)


def slots(db: psycopg.Connection[Any], token_id: str, kind: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM api_slots WHERE token_id = %s AND kind = %s AND expires_at > now()",
        (token_id, kind),
    ).fetchone()
    return int(row[0]) if row else 0


def stream_backends(db: psycopg.Connection[Any], waiting_on_lock: bool = False) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = %s AND (NOT %s OR wait_event_type = 'Lock')",
        (STREAM_APP, waiting_on_lock),
    ).fetchone()
    return int(row[0]) if row else 0


def users_csv(n: int, start: int = 0) -> bytes:
    return b"".join(
        ROW % (f"00000000-0000-4000-8000-{i:012d}".encode(), i) for i in range(start, start + n)
    )


def assert_refused(res: httpx.Response, limit: str) -> None:
    assert res.status_code == 429, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert res.headers["retry-after"] == "5"
    assert res.json()["limit"] == limit, res.json()


def seed_wide_users(db: psycopg.Connection[Any], n: int = 50_000) -> None:
    """~200 MB of export output: far more than the batches and socket buffers between hold."""
    db.execute(
        "INSERT INTO users (id, email, name, role, created_at) "
        "SELECT gen_random_uuid(), 'w' || g || '@example.com', repeat('n', 4000), 'reader', now() "
        "FROM generate_series(1, %s) g",
        (n,),
    )


# ---------------------------------------------------------------- queued + running jobs


def test_parallel_uploads_never_exceed_the_job_limit(
    svc: Bulkio, db: psycopg.Connection[Any]
) -> None:
    token_id, secret = token(db, "gina", ["imports:write"], max_running_jobs=2)
    clients = [svc.client_for(secret) for _ in range(UPLOADS)]

    def body(n: int) -> Iterator[bytes]:
        yield HEADER
        # Every request has been checked by now: the old check-then-upload-then-insert let
        # them all through.
        time.sleep(1)
        yield users_csv(10, start=100 * n)

    def upload(n: int) -> httpx.Response:
        return clients[n].post(
            "/v1/imports", params={"resource": "users", "format": "csv"}, content=body(n)
        )

    with ThreadPoolExecutor(UPLOADS) as pool:
        answers = list(pool.map(upload, range(UPLOADS)))
    accepted = [r for r in answers if r.status_code == 202]
    assert 1 <= len(accepted) <= 2, [r.text for r in answers]
    for res in answers:
        if res.status_code != 202:
            assert_refused(res, "running_jobs")
    (created,) = db.execute("SELECT count(*) FROM jobs WHERE token_id = %s", (token_id,)).fetchone()  # type: ignore[misc]
    assert created == len(accepted)
    assert slots(db, token_id, "upload") == 0


def test_parallel_export_jobs_never_exceed_the_job_limit(
    svc: Bulkio, db: psycopg.Connection[Any]
) -> None:
    _, secret = token(db, "hal", ["exports:write"], max_running_jobs=2)
    clients = [svc.client_for(secret) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda c: c.post("/v1/exports", json={"resource": "users"}), clients)
        )
    assert sum(r.status_code == 202 for r in answers) == 2, [r.text for r in answers]
    for res in answers:
        if res.status_code != 202:
            assert_refused(res, "running_jobs")


def test_uploads_in_progress_count_against_the_job_limit(
    svc: Bulkio, db: psycopg.Connection[Any]
) -> None:
    token_id, secret = token(db, "ida", ["imports:write"], max_running_jobs=1)
    client = svc.client_for(secret)
    go = threading.Event()

    def slow() -> Iterator[bytes]:
        yield HEADER
        go.wait(30)
        yield users_csv(5)

    with ThreadPoolExecutor(1) as pool:
        # No format: refused with 400 once received; its slot must come back all the same.
        first = pool.submit(
            client.post, "/v1/imports", params={"resource": "users"}, content=slow()
        )
        wait_until(
            lambda: slots(db, token_id, "upload") == 1, 60, message="the first upload's slot"
        )
        other = svc.client_for(secret).post(
            "/v1/imports",
            params={"resource": "users", "format": "csv"},
            content=HEADER + users_csv(1),
        )
        assert_refused(other, "running_jobs")
        go.set()
        assert first.result().status_code == 400
    assert slots(db, token_id, "upload") == 0
    res = client.post(
        "/v1/imports", params={"resource": "users", "format": "csv"}, content=HEADER + users_csv(1)
    )
    assert res.status_code == 202, res.text


# ---------------------------------------------------------------- concurrent uploads


def test_concurrent_uploads_are_capped_per_token(svc: Bulkio, db: psycopg.Connection[Any]) -> None:
    token_id, secret = token(db, "jon", ["imports:write"])
    go = threading.Event()

    def slow(n: int) -> Iterator[bytes]:
        yield HEADER
        go.wait(30)
        yield users_csv(5, start=10 * n)

    clients = [svc.client_for(secret) for _ in range(UPLOADS)]
    params = {"resource": "users", "format": "csv"}
    with ThreadPoolExecutor(UPLOADS) as pool:
        running = [
            pool.submit(c.post, "/v1/imports", params=params, content=slow(n))
            for n, c in enumerate(clients)
        ]
        wait_until(
            lambda: slots(db, token_id, "upload") == UPLOADS,
            60,
            message="three uploads in progress",
        )
        one_more = svc.client_for(secret).post(
            "/v1/imports", params=params, content=HEADER + users_csv(1, start=99)
        )
        assert_refused(one_more, "concurrent_uploads")
        assert "BULKIO_MAX_CONCURRENT_UPLOADS" in one_more.json()["detail"]
        _, other = token(db, "jon", ["imports:write"])  # the cap is per token
        res = svc.client_for(other).post(
            "/v1/imports", params=params, content=HEADER + users_csv(1, start=98)
        )
        assert res.status_code == 202, res.text
        go.set()
        assert [f.result().status_code for f in running] == [202] * UPLOADS
    assert slots(db, token_id, "upload") == 0
    res = svc.client_for(secret).post(
        "/v1/imports", params=params, content=HEADER + users_csv(1, start=97)
    )
    assert res.status_code == 202, res.text


def raw_request(port: int, head: str, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(head.encode())
    return sock


def test_an_upload_cut_off_by_its_client_gives_its_slot_back(
    svc: Bulkio, db: psycopg.Connection[Any]
) -> None:
    token_id, secret = token(db, "kim", ["imports:write"])
    sock = raw_request(
        svc.port,
        "POST /v1/imports?resource=users&format=csv HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Length: 10000000\r\n\r\n",
    )
    try:
        sock.sendall(HEADER + users_csv(100))
        wait_until(lambda: slots(db, token_id, "upload") == 1, 60, message="the upload's slot")
    finally:
        sock.close()
    wait_until(lambda: slots(db, token_id, "upload") == 0, 30, message="the slot given back")
    (created,) = db.execute("SELECT count(*) FROM jobs").fetchone()  # type: ignore[misc]
    assert created == 0


# ---------------------------------------------------------------- concurrent streams


def import_job(db: psycopg.Connection[Any], owner: str) -> str:
    job_id = jobs.new_job_id()
    jobs.create(db, job_id=job_id, kind="import", resource="users", fmt="csv", mode="upsert",
                owner=owner)  # fmt: skip
    return job_id


def test_concurrent_streams_are_capped_per_token(
    svc: Bulkio, db: psycopg.Connection[Any], database_url: str
) -> None:
    db.execute(
        "INSERT INTO users (id, email, name, role, created_at) "
        "SELECT gen_random_uuid(), 'v' || g || '@example.com', 'V', 'reader', now() "
        "FROM generate_series(1, 10) g"
    )
    token_id, secret = token(db, "lea", ["exports:read", "imports:read"])
    job_id = import_job(db, "lea")
    client = svc.client_for(secret)
    # The first export waits for a lock inside its query, holding its slot meanwhile.
    with psycopg.connect(database_url) as locker, ThreadPoolExecutor(1) as pool:
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        first = pool.submit(client.get, "/v1/exports", params={"resource": "users"})
        wait_until(
            lambda: stream_backends(db, waiting_on_lock=True) == 1, 60, message="the first export"
        )
        assert slots(db, token_id, "stream") == 1
        again = svc.client_for(secret)
        assert_refused(again.get("/v1/exports", params={"resource": "users"}), "concurrent_streams")
        refused = again.get(f"/v1/imports/{job_id}/errors")
        assert_refused(refused, "concurrent_streams")
        assert "BULKIO_MAX_CONCURRENT_STREAMS" in refused.json()["detail"]
        _, other = token(db, "lea", ["imports:read"])  # the cap is per token
        assert svc.client_for(other).get(f"/v1/imports/{job_id}/errors").status_code == 200
        # Renewed while its request runs: the slot outlives its TTL.
        time.sleep(2 * SLOT_TTL)
        assert slots(db, token_id, "stream") == 1
        assert_refused(again.get(f"/v1/imports/{job_id}/errors"), "concurrent_streams")
        locker.rollback()
        res = first.result()
    assert res.status_code == 200 and len(res.content.splitlines()) == 10
    wait_until(lambda: slots(db, token_id, "stream") == 0, 30, message="the slot given back")
    assert again.get(f"/v1/imports/{job_id}/errors").status_code == 200
    assert slots(db, token_id, "stream") == 0


def test_a_stream_whose_client_goes_away_gives_its_slot_back(
    svc: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed_wide_users(db)
    token_id, secret = token(db, "max", ["exports:read"])
    client = svc.client_for(secret)
    with client.stream(
        "GET", "/v1/exports", params={"resource": "users"}, headers={"Accept-Encoding": "identity"}
    ) as res:
        assert res.status_code == 200
        next(res.iter_bytes())
        assert slots(db, token_id, "stream") == 1
    wait_until(lambda: slots(db, token_id, "stream") == 0, 30, message="the slot given back")
    wait_until(lambda: stream_backends(db) == 0, 30, message="the export's connection closed")


def metric(service: Bulkio, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{service.port}/metrics").text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return sum(values)


@pytest.mark.parametrize("route", ["export", "error report"])
def test_a_reader_that_stops_reading_is_cut_off_and_its_snapshot_released(
    svc: Bulkio, db: psycopg.Connection[Any], route: str
) -> None:
    token_id, secret = token(db, "ned", ["exports:read", "imports:read"])
    if route == "export":
        seed_wide_users(db)
        path = "/v1/exports?resource=users"
    else:
        job_id = import_job(db, "ned")
        db.execute(
            "INSERT INTO job_errors (job_id, row_no, line_no, field, code, message, value) "
            "SELECT %s, g, g + 1, 'name', 'too_long', 'name is too long', repeat('v', 4000) "
            "FROM generate_series(1, 50000) g",
            (job_id,),
        )
        path = f"/v1/imports/{job_id}/errors"
    stalled_before = metric(svc, "bulkio_streams_stalled_total")
    sock = raw_request(
        svc.port,
        f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {secret}\r\n"
        "Accept-Encoding: identity\r\n\r\n",
        rcvbuf=4096,
    )
    try:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        wait_until(lambda: stream_backends(db) == 1, 60, message="the stream's database connection")
        # The client now reads nothing: within the stall bound (2 s) plus slack, the server
        # gives up, closes the stream's connection (and snapshot) and gives the slot back.
        wait_until(
            lambda: stream_backends(db) == 0, 60, message="the stalled stream's connection closed"
        )
        wait_until(lambda: slots(db, token_id, "stream") == 0, 60, message="the slot given back")
        assert metric(svc, "bulkio_streams_stalled_total") == stalled_before + 1
        # What the client still finds in its buffers ends without the last chunk: truncated.
        sock.settimeout(30)
        tail = b""
        while chunk := sock.recv(1 << 20):
            tail = (tail + chunk)[-16:]
        assert not tail.endswith(b"0\r\n\r\n")
    finally:
        sock.close()


def test_slots_of_a_crashed_api_process_expire(
    svc: Bulkio, db: psycopg.Connection[Any], database_url: str
) -> None:
    token_id, secret = token(db, "oli", ["exports:read"])
    with psycopg.connect(database_url) as locker, ThreadPoolExecutor(1) as pool:
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        doomed = pool.submit(
            svc.client_for(secret).get, "/v1/exports", params={"resource": "users"}
        )
        wait_until(lambda: stream_backends(db, waiting_on_lock=True) == 1, 60, message="the export")
        assert svc.api is not None
        svc.api.signal(signal.SIGKILL)
        svc.api.wait(30)
        with pytest.raises(httpx.HTTPError):
            doomed.result()
        locker.rollback()
    svc.api.stop()
    (rows,) = db.execute(
        "SELECT count(*) FROM api_slots WHERE token_id = %s", (token_id,)
    ).fetchone()  # type: ignore[misc]
    assert rows == 1  # nobody released it...
    svc.start_api()
    wait_until(lambda: slots(db, token_id, "stream") == 0, 30, message="the slot expired")
    res = svc.client_for(secret).get("/v1/exports", params={"resource": "users"})
    assert res.status_code == 200, res.text
