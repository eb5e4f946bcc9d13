"""Job events (issue #10): the log written by the jobs triggers, its JSON pages, the signed
events_url, owner isolation, Server-Sent Events woken by NOTIFY (never by polling), heartbeats,
disconnects, 204 for a finished job and retention."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from engine.retention import cleanup
from engine.settings import load_settings
from engine.storage import open_storage, sign_path
from tests.support.datafiles import make
from tests.support.service import Bulkio, make_token
from tests.support.sse import events, messages, open_stream
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

COUNTERS = ("processed", "successful", "failed", "error_count", "inserted", "updated", "bytes_read")


def _all_events(client: httpx.Client, job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    res = client.get(f"/v1/jobs/{job_id}/events", params={"limit": limit})
    assert res.status_code == 200, res.text
    return res.json()["events"]  # type: ignore[no-any-return]


@pytest.fixture
def finished(service: Bulkio, datadir: Path) -> tuple[dict[str, Any], Any]:
    """A 3,000-record import with defects (3 batches of 1,000), finished."""
    path, expected = make(datadir, "users", "csv", 3000, seed=21)
    return service.import_file(path, "users"), expected


def test_an_import_logs_queued_started_progress_per_batch_and_completed(
    service: Bulkio, finished: tuple[dict[str, Any], Any]
) -> None:
    job, expected = finished
    got = _all_events(service.client, job["job_id"])
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert [e["type"] for e in got] == ["queued", "started", *["progress"] * 3, "completed"]
    assert got[1]["data"] == {"attempt": 1}
    progress = [e["data"] for e in got if e["type"] == "progress"]
    assert [p["batches"] for p in progress] == [1, 2, 3]
    assert [p["processed"] for p in progress] == [1000, 2000, 3000]
    last, end = progress[-1], got[-1]["data"]
    assert {k: last[k] for k in COUNTERS} == {k: end[k] for k in COUNTERS}
    assert {k: end[k] for k in ("processed", "successful", "failed")} == {
        "processed": expected.total_records,
        "successful": expected.successful,
        "failed": expected.failed,
    }
    assert {k: job[k] for k in ("processed", "successful", "failed", "error_count")} == {
        k: end[k] for k in ("processed", "successful", "failed", "error_count")
    }
    assert end["status"] == "completed" and end["total_records"] == expected.total_records
    assert all(p["rows_per_sec"] is None or p["rows_per_sec"] > 0 for p in progress)
    assert job["events_url"].startswith(f"{service.env['BULKIO_PUBLIC_URL']}/v1/jobs/")


def test_json_pages_follow_after_and_limit(
    service: Bulkio, finished: tuple[dict[str, Any], Any]
) -> None:
    job_id = finished[0]["job_id"]
    whole = _all_events(service.client, job_id)
    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        res = service.client.get(f"/v1/jobs/{job_id}/events", params={"after": after, "limit": 2})
        body = res.json()
        assert len(body["events"]) <= 2
        if not body["events"]:
            assert body["next_after"] == after
            break
        paged += body["events"]
        after = body["next_after"]
        assert after == body["events"][-1]["seq"]
    assert paged == whole


@pytest.mark.parametrize(
    ("params", "headers", "named"),
    [
        ({"after": "-1"}, {}, "after"),
        ({"after": "x"}, {}, "after"),
        ({"limit": "0"}, {}, "limit"),
        ({"limit": "1001"}, {}, "limit"),
        ({}, {"Accept": "text/event-stream", "Last-Event-ID": "abc"}, "Last-Event-ID"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    service: Bulkio,
    finished: tuple[dict[str, Any], Any],
    params: dict[str, str],
    headers: dict[str, str],
    named: str,
) -> None:
    res = service.client.get(
        f"/v1/jobs/{finished[0]['job_id']}/events", params=params, headers=headers
    )
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert named in res.json()["detail"]


def test_other_owners_get_404_and_kind_scopes_apply(
    service: Bulkio, finished: tuple[dict[str, Any], Any]
) -> None:
    url = service.env["BULKIO_DATABASE_URL"]
    job_id = finished[0]["job_id"]
    path = f"/v1/jobs/{job_id}/events"
    stranger = service.client_for(make_token(url, "someone-else", ["imports:read"]))
    assert stranger.get(path).status_code == 404
    with open_stream(stranger, path) as res:
        assert res.status_code == 404
    own_exports_only = service.client_for(make_token(url, "tester", ["exports:read"]))
    assert own_exports_only.get(path).status_code == 403
    own = service.client_for(make_token(url, "tester", ["imports:read"]))
    assert own.get(path).status_code == 200
    assert service.client_for(None).get(path).status_code == 401
    assert service.client.get(f"/v1/jobs/{uuid.uuid4()}/events").status_code == 404
    assert service.client.get("/v1/jobs/not-a-uuid/events").status_code == 404


def _signed(url: str) -> tuple[str, dict[str, str]]:
    parsed = urlparse(url)
    return parsed.path, {k: v[0] for k, v in parse_qs(parsed.query).items()}


def test_the_signed_events_url_reads_that_jobs_events_and_nothing_else(
    service: Bulkio, finished: tuple[dict[str, Any], Any], datadir: Path
) -> None:
    job = finished[0]
    anonymous = service.client_for(None)
    path, query = _signed(job["events_url"])
    assert path == f"/v1/jobs/{job['job_id']}/events" and set(query) == {"expires", "signature"}
    res = anonymous.get(job["events_url"])
    assert res.status_code == 200, res.text
    assert res.json()["events"][-1]["type"] == "completed"
    with open_stream(anonymous, path, **query) as stream:
        assert stream.status_code == 200
        assert [m.event for m in events(stream)][-1] == "completed"
    # tampered, expired, or another job's path: 403
    flipped = query["signature"][:-1] + ("0" if query["signature"][-1] != "0" else "1")
    assert anonymous.get(path, params={**query, "signature": flipped}).status_code == 403
    past = int(time.time()) - 10
    secret = service.env["BULKIO_SIGNING_SECRET"].encode()
    expired = {"expires": str(past), "signature": sign_path(secret, path, past)}
    res = anonymous.get(path, params=expired)
    assert res.status_code == 403 and "expired" in res.json()["detail"]
    other = service.import_file(make(datadir, "users", "csv", 100, seed=22)[0], "users")
    assert anonymous.get(f"/v1/jobs/{other['job_id']}/events", params=query).status_code == 403
    # the signature is not a credential anywhere else
    assert anonymous.get(f"/v1/jobs/{job['job_id']}", params=query).status_code == 401
    assert anonymous.get("/v1/jobs", params=query).status_code == 401
    assert anonymous.get(f"/v1/imports/{job['job_id']}", params=query).status_code == 401
    assert anonymous.get(f"/v1/downloads/{job['job_id']}", params=query).status_code == 403


def test_a_stream_of_a_finished_job_replays_then_ends_and_then_answers_204(
    service: Bulkio, finished: tuple[dict[str, Any], Any]
) -> None:
    job_id = finished[0]["job_id"]
    path = f"/v1/jobs/{job_id}/events"
    whole = _all_events(service.client, job_id)
    with open_stream(service.client, path) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        assert res.headers["cache-control"] == "no-cache"
        assert res.headers["x-accel-buffering"] == "no"
        got = list(events(res))
    assert [(m.seq, m.event) for m in got] == [(e["seq"], e["type"]) for e in whole]
    assert [m.json() for m in got] == whole
    with open_stream(service.client, path, last_event_id=3) as res:
        assert [m.seq for m in events(res)] == [e["seq"] for e in whole[3:]]
    with open_stream(service.client, path, after=2) as res:
        assert [m.seq for m in events(res)] == [e["seq"] for e in whole[2:]]
    with open_stream(service.client, path, last_event_id=whole[-1]["seq"]) as res:
        assert res.status_code == 204  # EventSource: stop reconnecting


# ---------------------------------------------------------------- live streams, one quiet job

HEARTBEAT = 1


@pytest.fixture
def quick_api(service: Bulkio, tmp_path: Path) -> Iterator[Bulkio]:
    """A second API process (no workers) with a 1 s heartbeat and metrics of its own."""
    env = {
        **service.env,
        "BULKIO_EVENTS_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "BULKIO_METRICS_DIR": str(tmp_path / "metrics"),
    }
    api = Bulkio(env, tmp_path, workers=0)
    yield api
    api.stop()


@pytest.fixture
def quiet_job(db: psycopg.Connection[Any]) -> str:
    """A running job no worker touches (its lease lasts an hour): its events come from the test."""
    job_id = str(uuid.uuid4())
    db.execute(
        "INSERT INTO jobs (id, kind, resource, format, owner, status, attempts, lease_owner, "
        "lease_expires, started_at) VALUES (%s, 'import', 'users', 'csv', 'tester', 'running', "
        "1, 'nobody', now() + interval '1 hour', now())",
        (job_id,),
    )
    return job_id


def _streams_open(api: Bulkio) -> float:
    text = api.client.get("/metrics").text
    found = re.search(r"^bulkio_event_streams (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_notify_wakes_a_waiting_stream_which_never_polls_the_table(
    quick_api: Bulkio, quiet_job: str, db: psycopg.Connection[Any]
) -> None:
    path = f"/v1/jobs/{quiet_job}/events"
    with open_stream(quick_api.client, path) as res:
        stream = messages(res)
        assert next(stream).event == "queued"
        assert next(stream).comment == "keep-alive"  # nothing happened for a heartbeat
        # An event row without a NOTIFY: a stream that polled would find it; this one must not.
        db.execute(
            "INSERT INTO job_events (job_id, seq, type, data) VALUES (%s, 2, 'warning', %s)",
            (quiet_job, Jsonb({"message": "written behind the stream's back"})),
        )
        for _ in range(3):
            assert next(stream).comment == "keep-alive"
        db.execute("SELECT pg_notify('bulkio_job_events', %s)", (quiet_job,))
        woken = next(stream)
        assert (woken.seq, woken.event) == (2, "warning")
        # The triggers: progress, then the terminal event ends the stream.
        db.execute("UPDATE jobs SET event_seq = 2 WHERE id = %s", (quiet_job,))
        db.execute(
            "UPDATE jobs SET processed = 10, successful = 10, bytes_read = 99 WHERE id = %s",
            (quiet_job,),
        )
        progress = next(m for m in stream if m.comment is None)
        assert (progress.seq, progress.event) == (3, "progress")
        assert progress.json()["data"]["processed"] == 10
        db.execute(
            "UPDATE jobs SET status = 'completed', finished_at = now() WHERE id = %s", (quiet_job,)
        )
        rest = [m for m in stream if m.comment is None]
        assert [(m.seq, m.event) for m in rest] == [(4, "completed")]


def test_a_client_that_disconnects_releases_its_stream_at_once(
    quick_api: Bulkio, quiet_job: str
) -> None:
    path = f"/v1/jobs/{quiet_job}/events"
    clients = [quick_api.client_for(quick_api.token) for _ in range(3)]
    opened = [c.stream("GET", path, headers={"Accept": "text/event-stream"}) for c in clients]
    streams = [cm.__enter__() for cm in opened]
    # Kept alive: a message iterator that is dropped closes its response (httpx closes the
    # connection when the line iterator is closed), which is a disconnect to the server.
    following = [messages(res) for res in streams]
    for stream in following:
        assert next(stream).event == "queued"
    assert _streams_open(quick_api) == 3
    for cm in opened:
        cm.__exit__(None, None, None)
    for c in clients:
        c.close()
    wait_until(
        lambda: _streams_open(quick_api) == 0, 10, 0.1, "the streams to close after their clients"
    )


def test_retention_deletes_events_with_their_job(
    service: Bulkio, finished: tuple[dict[str, Any], Any], db: psycopg.Connection[Any]
) -> None:
    job_id = finished[0]["job_id"]
    assert db.execute("SELECT count(*) FROM job_events WHERE job_id = %s", (job_id,)).fetchone()[0]
    settings = load_settings(service.env)
    report = cleanup(
        db, open_storage(settings), timedelta(days=1), now=datetime.now(UTC) + timedelta(days=2)
    )
    assert report.jobs >= 1
    left = db.execute("SELECT count(*) FROM job_events WHERE job_id = %s", (job_id,)).fetchone()
    assert left[0] == 0


def test_an_export_logs_its_progress_and_its_result(
    service: Bulkio, finished: tuple[dict[str, Any], Any]
) -> None:
    res = service.client.post("/v1/exports", json={"resource": "users", "format": "csv"})
    assert res.status_code == 202, res.text
    assert res.json()["events_url"]
    job = service.wait(res.json()["job_id"])
    got = _all_events(service.client, job["job_id"])
    types = [e["type"] for e in got]
    assert types[:2] == ["queued", "started"] and types[-1] == "completed"
    assert set(types[2:-1]) == {"progress"}
    last, end = got[-2]["data"], got[-1]["data"]
    assert {k: last[k] for k in COUNTERS} == {k: end[k] for k in COUNTERS}
    assert end["processed"] == finished[1].successful == job["processed"]
    assert end["result_bytes"] == job["result_bytes"] == end["bytes_read"]


def test_a_file_that_cannot_be_read_ends_with_failed_and_its_error(service: Bulkio) -> None:
    res = service.upload(None, "users", data=b"email,name\nx@y.z,X\n", filename="u.csv")
    job = service.wait(res.json()["job_id"])
    got = _all_events(service.client, job["job_id"])
    assert [e["type"] for e in got] == ["queued", "started", "failed"]
    assert got[-1]["data"]["error"] == job["error"]
    assert "lacks required column(s)" in job["error"]


def test_cancelling_a_queued_job_ends_its_log_and_its_stream(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    job_id = str(uuid.uuid4())
    # queued, and touched in the future so that no reconciler enqueues it meanwhile
    db.execute(
        "INSERT INTO jobs (id, kind, resource, format, owner, updated_at) "
        "VALUES (%s, 'import', 'users', 'csv', 'tester', now() + interval '1 hour')",
        (job_id,),
    )
    res = service.client.post(f"/v1/jobs/{job_id}/cancel")
    assert res.status_code == 202 and res.json()["events_url"]
    with open_stream(service.client, f"/v1/jobs/{job_id}/events") as stream:
        assert [m.event for m in events(stream)] == ["queued", "cancelled"]


def test_the_migration_tells_what_it_can_of_jobs_that_existed_before_it(
    fresh_database: str,
) -> None:
    """Jobs created before migration 0010 get `queued`, `started` when they had started, and
    their end; event_seq continues after them."""
    from engine.db import migrations

    with psycopg.connect(fresh_database, autocommit=True) as conn:
        for version, sql in migrations():
            if version < "0010":
                conn.execute(sql.encode())
        ids = [str(uuid.uuid4()) for _ in range(3)]
        conn.execute(
            """INSERT INTO jobs (id, kind, resource, format, owner, status, processed,
                                 successful, failed, started_at, finished_at)
               VALUES (%s, 'import', 'users', 'csv', 'a', 'queued', 0, 0, 0, NULL, NULL),
                      (%s, 'import', 'users', 'csv', 'a', 'running', 5, 5, 0, now(), NULL),
                      (%s, 'export', 'users', 'csv', 'a', 'failed', 7, 7, 0, now(), now())""",
            ids,
        )
        conn.execute("UPDATE jobs SET error = 'boom' WHERE id = %s", (ids[2],))
        conn.execute(next(sql for version, sql in migrations() if version.startswith("0010")))
        logs = [
            conn.execute(
                "SELECT seq, type FROM job_events WHERE job_id = %s ORDER BY seq", (i,)
            ).fetchall()
            for i in ids
        ]
        assert logs == [
            [(1, "queued")],
            [(1, "queued"), (2, "started")],
            [(1, "queued"), (2, "started"), (3, "failed")],
        ]
        end = conn.execute(
            "SELECT data FROM job_events WHERE job_id = %s AND seq = 3", (ids[2],)
        ).fetchone()
        assert end is not None and end[0]["error"] == "boom" and end[0]["processed"] == 7
        conn.execute("UPDATE jobs SET processed = 6, bytes_read = 1 WHERE id = %s", (ids[1],))
        after = conn.execute(
            "SELECT seq, type FROM job_events WHERE job_id = %s ORDER BY seq DESC LIMIT 1",
            (ids[1],),
        ).fetchone()
        assert after == (3, "progress")
