"""Webhook delivery end to end (issue #10): a real receiver on loopback verifies every request
with the Standard Webhooks reference library, against a running API and worker processes.

The service here is its own (database, Redis database, queue), started with
BULKIO_WEBHOOK_ALLOW_PRIVATE=true (the receiver is on loopback) and a retry schedule of seconds;
tests/integration/test_webhook_guard.py covers the default, strict guard."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from engine.retention import cleanup
from engine.settings import load_settings
from engine.storage import open_storage
from tests.support.database import empty, migrated_database
from tests.support.datafiles import make
from tests.support.receiver import Answer, Receiver
from tests.support.servers import PostgresServer
from tests.support.service import TEST_ENV, Bulkio, make_token
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

WEBHOOK_ENV = {
    "BULKIO_WEBHOOK_ALLOW_PRIVATE": "true",
    "BULKIO_WEBHOOK_TIMEOUT_SECONDS": "3",
    "BULKIO_WEBHOOK_RETRY_SCHEDULE": "0,1,1,1,1,1,1,1",
    "BULKIO_WEBHOOK_ROTATION_SECONDS": "3600",
}


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server, "bulkio_webhooks")


@pytest.fixture(scope="module")
def hooks_service(
    database_url: str, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bulkio]:
    work = tmp_path_factory.mktemp("webhooks")
    env = {
        **TEST_ENV,
        **WEBHOOK_ENV,
        "BULKIO_DATABASE_URL": database_url,
        # Apart from the session's service: its own Redis database and queue.
        "BULKIO_REDIS_URL": redis_server.url(6),
        "BULKIO_QUEUE_NAME": "webhooks-test",
        "BULKIO_STORAGE_URL": f"file://{work / 'objects'}",
        "BULKIO_METRICS_DIR": str(work / "metrics"),
    }
    service = Bulkio(env, work, workers=1)
    yield service
    service.stop()


@pytest.fixture
def hooks(hooks_service: Bulkio, db: psycopg.Connection[Any]) -> Iterator[Bulkio]:
    empty(db, "webhook_endpoints, jobs, job_errors, users")
    hooks_service.revive_workers()
    yield hooks_service
    hooks_service.close_clients()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.stop()


def _register(service: Bulkio, url: str, types: list[str]) -> dict[str, Any]:
    res = service.client.post("/v1/webhooks", json={"url": url, "event_types": types})
    assert res.status_code == 201, res.text
    return res.json()  # type: ignore[no-any-return]


def _deliveries(service: Bulkio, webhook_id: str) -> list[dict[str, Any]]:
    res = service.client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert res.status_code == 200, res.text
    return res.json()["deliveries"]  # type: ignore[no-any-return]


def _until(check: Callable[[], Any], service: Bulkio, what: str, timeout: float = 90) -> Any:
    """wait_until at this module's pace, with the service's logs if it times out."""
    return wait_until(check, timeout, 0.2, lambda: f"{what}\n{service.logs()}")


def _import(service: Bulkio, datadir: Path, seed: int = 1) -> dict[str, Any]:
    path, _ = make(datadir, "users", "csv", 200, seed=seed)
    job = service.import_file(path, "users")
    assert job["status"] == "completed", job
    return job


def test_a_finished_import_is_delivered_signed_to_each_matching_endpoint(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver().start()
    receivers.append(receiver)
    endpoint = _register(hooks, receiver.url, ["import.completed", "import.failed"])
    exports_only = _register(hooks, receiver.url, ["export.completed"])
    assert endpoint["secret"].startswith("whsec_") and endpoint["enabled"] is True
    receiver.secrets.append(endpoint["secret"])
    job = _import(hooks, datadir)

    [got] = receiver.wait_for(1, why=hooks.logs)
    assert got.verified == {endpoint["secret"]: True}
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"].startswith("msg_")
    body = json.loads(got.body)
    assert body["type"] == "import.completed"
    data = body["data"]
    assert {k: data[k] for k in ("job_id", "kind", "status", "resource")} == {
        "job_id": job["job_id"],
        "kind": "import",
        "status": "completed",
        "resource": "users",
    }
    assert {k: data[k] for k in ("processed", "successful", "failed", "error_count")} == {
        k: job[k] for k in ("processed", "successful", "failed", "error_count")
    }
    public = hooks.env["BULKIO_PUBLIC_URL"]
    assert data["links"]["job"] == f"{public}/v1/jobs/{job['job_id']}"
    assert hooks.client.get(data["links"]["job"]).json()["job_id"] == job["job_id"]

    [delivery] = _until(
        lambda: [d for d in _deliveries(hooks, endpoint["id"]) if d["state"] == "delivered"],
        hooks,
        "the delivery to be recorded",
    )
    assert delivery["id"] == got.headers["webhook-id"]
    assert delivery["job_id"] == job["job_id"] and delivery["event_type"] == "import.completed"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200 and attempt["error"] is None
    assert attempt["duration_ms"] >= 0 and attempt["at"]
    # The outbox row is written with the job's end: an endpoint not subscribed has none.
    assert _deliveries(hooks, exports_only["id"]) == []
    shown = hooks.client.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert "secret" not in shown and shown["url"] == receiver.url


def test_a_receiver_that_is_down_then_up_gets_the_event_with_the_same_webhook_id(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver()  # not listening yet: connections are refused
    receivers.append(receiver)
    endpoint = _register(hooks, receiver.url, ["import.completed"])
    receiver.secrets.append(endpoint["secret"])
    _import(hooks, datadir, seed=2)

    def failed_twice() -> list[dict[str, Any]]:
        return [d for d in _deliveries(hooks, endpoint["id"]) if len(d["attempts"]) >= 2]

    [pending] = _until(failed_twice, hooks, "two failed attempts")
    assert pending["state"] == "pending" and pending["next_attempt"]
    assert all(a["status_code"] is None for a in pending["attempts"])
    assert "connection refused" in pending["attempts"][0]["error"]
    res = hooks.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{pending['id']}/redeliver")
    assert res.status_code == 409, res.text  # still being retried

    receiver.start()
    [got] = receiver.wait_for(1, why=hooks.logs)
    assert got.verified == {endpoint["secret"]: True}
    assert got.headers["webhook-id"] == pending["id"]
    [done] = _until(
        lambda: [d for d in _deliveries(hooks, endpoint["id"]) if d["state"] == "delivered"],
        hooks,
        "delivered",
    )
    assert done["id"] == pending["id"]
    assert done["attempts"][-1]["status_code"] == 200
    assert [a["attempt"] for a in done["attempts"]] == list(range(1, done["attempt_count"] + 1))

    # Redelivery: the same message again, same webhook-id, a new attempt in the history.
    res = hooks.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{done['id']}/redeliver")
    assert res.status_code == 202, res.text
    assert res.json()["state"] == "pending"
    first, again = receiver.wait_for(2, why=hooks.logs)
    assert again.headers["webhook-id"] == first.headers["webhook-id"] == done["id"]
    assert again.body == first.body and again.verified == {endpoint["secret"]: True}


def test_a_worker_killed_during_a_delivery_still_delivers(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    """The receiver holds the first request; the worker sending it is SIGKILLed; a new worker
    sends the message again (same webhook-id) once the dead one's lease has run out."""
    hold = threading.Event()
    receiver = Receiver(script=[Answer(stall=hold)]).start()
    receivers.append(receiver)
    endpoint = _register(hooks, receiver.url, ["import.completed"])
    receiver.secrets.append(endpoint["secret"])
    try:
        _import(hooks, datadir, seed=3)
        [first] = receiver.wait_for(1, why=hooks.logs)
        for worker in hooks.workers:
            worker.signal(signal.SIGKILL)
            worker.wait(30)
        hooks.start_worker()
        first, second = receiver.wait_for(2, timeout=120, why=hooks.logs)
    finally:
        hold.set()
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body
    assert second.verified == {endpoint["secret"]: True}
    [done] = _until(
        lambda: [d for d in _deliveries(hooks, endpoint["id"]) if d["state"] == "delivered"],
        hooks,
        "delivered",
    )
    lost, ok = done["attempts"]
    assert lost["status_code"] is None and "worker sending it stopped" in lost["error"]
    assert ok["status_code"] == 200


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver], status: int
) -> None:
    receiver = Receiver(script=[Answer(status, {"Retry-After": "4"})]).start()
    receivers.append(receiver)
    endpoint = _register(hooks, receiver.url, ["import.completed"])
    _import(hooks, datadir, seed=4)
    first, second = receiver.wait_for(2, why=hooks.logs)
    # The schedule says 1 s; the receiver asked for 4 (a lower bound: no upper one is asserted).
    assert second.at - first.at >= 3.9
    assert (first.answered, second.answered) == (status, 200)
    [done] = _until(
        lambda: [d for d in _deliveries(hooks, endpoint["id"]) if d["state"] == "delivered"],
        hooks,
        "delivered",
    )
    assert [a["status_code"] for a in done["attempts"]] == [status, 200]
    assert done["attempts"][0]["error"].startswith(f"HTTP {status}")


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver()
    receiver.script.append(Answer(302, {"Location": receiver.url + "/elsewhere"}))
    receivers.append(receiver.start())
    endpoint = _register(hooks, receiver.url, ["import.completed"])
    _import(hooks, datadir, seed=14)
    first, second = receiver.wait_for(2, why=hooks.logs)
    assert [first.path, second.path] == ["/hooks", "/hooks"]  # retried, never redirected
    [done] = _until(
        lambda: [d for d in _deliveries(hooks, endpoint["id"]) if d["state"] == "delivered"],
        hooks,
        "delivered",
    )
    failed = done["attempts"][0]
    assert failed["status_code"] == 302 and "redirects are not followed" in failed["error"]


def test_410_disables_the_endpoint(hooks: Bulkio, datadir: Path, receivers: list[Receiver]) -> None:
    receiver = Receiver(script=[Answer(410)]).start()
    receivers.append(receiver)
    endpoint = _register(hooks, receiver.url, ["import.completed"])
    _import(hooks, datadir, seed=5)
    receiver.wait_for(1, why=hooks.logs)
    view = _until(
        lambda: (
            (v := hooks.client.get(f"/v1/webhooks/{endpoint['id']}").json())["enabled"] is False
            and v
        ),
        hooks,
        "the endpoint to be disabled",
    )
    assert "410" in view["disabled_reason"]
    [failed] = _deliveries(hooks, endpoint["id"])
    assert failed["state"] == "failed" and failed["last_status"] == 410
    res = hooks.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{failed['id']}/redeliver")
    assert res.status_code == 409, res.text
    _import(hooks, datadir, seed=6)  # a disabled endpoint gets no delivery for later jobs
    assert len(_deliveries(hooks, endpoint["id"])) == 1
    assert len(receiver.received) == 1


def test_a_rotated_secret_and_the_previous_one_both_sign_during_the_window(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver().start()
    receivers.append(receiver)
    endpoint = _register(hooks, receiver.url, ["import.completed"])
    res = hooks.client.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret")
    assert res.status_code == 200, res.text
    rotated = res.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != endpoint["secret"]
    assert rotated["previous_secret_expires"]
    receiver.secrets += [endpoint["secret"], rotated["secret"]]
    _import(hooks, datadir, seed=7)
    [got] = receiver.wait_for(1, why=hooks.logs)
    assert got.verified == {endpoint["secret"]: True, rotated["secret"]: True}
    assert len(got.headers["webhook-signature"].split(" ")) == 2

    # A second rotation ends the first secret's window: only the two newest sign.
    newest = hooks.client.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret").json()["secret"]
    receiver.secrets.append(newest)
    _import(hooks, datadir, seed=8)
    _, later = receiver.wait_for(2, why=hooks.logs)
    assert later.verified == {
        endpoint["secret"]: False,
        rotated["secret"]: True,
        newest: True,
    }


def test_retention_and_deletion_remove_deliveries_with_their_job_or_endpoint(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver().start()
    receivers.append(receiver)
    first = _register(hooks, receiver.url, ["import.completed"])
    second = _register(hooks, receiver.url, ["import.completed"])
    job = _import(hooks, datadir, seed=9)
    receiver.wait_for(2, why=hooks.logs)
    url = hooks.env["BULKIO_DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:

        def counts() -> tuple[int, int]:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM webhook_deliveries), "
                "(SELECT count(*) FROM webhook_attempts)"
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        _until(lambda: counts() == (2, 2), hooks, "both attempts recorded")
        assert hooks.client.delete(f"/v1/webhooks/{second['id']}").status_code == 204
        assert hooks.client.get(f"/v1/webhooks/{second['id']}").status_code == 404
        assert counts() == (1, 1)
        conn.execute(
            "UPDATE jobs SET finished_at = now() - interval '30 days' WHERE id = %s",
            (job["job_id"],),
        )
        settings = load_settings(hooks.env)
        report = cleanup(conn, open_storage(settings), timedelta(days=7))
        assert report.jobs == 1
        assert counts() == (0, 0)
    assert _deliveries(hooks, first["id"]) == []


def test_the_history_pages_with_a_cursor(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver().start()
    receivers.append(receiver)
    endpoint = _register(hooks, receiver.url, ["import.completed"])
    for seed in (10, 11, 12):
        _import(hooks, datadir, seed=seed)
    receiver.wait_for(3, why=hooks.logs)
    seen: list[str] = []
    page = hooks.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", params={"limit": 2})
    while True:
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [d["id"] for d in body["deliveries"]]
        if body["next"] is None:
            break
        page = httpx.get(body["next"], headers=hooks.client.headers, timeout=30)
    assert len(seen) == len(set(seen)) == 3
    res = hooks.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", params={"limit": 0})
    assert res.status_code == 400


def test_endpoints_are_their_owners_and_hear_only_their_owners_jobs(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver().start()
    receivers.append(receiver)
    scopes = ["imports:write", "imports:read", "webhooks:read", "webhooks:write"]
    url = hooks.env["BULKIO_DATABASE_URL"]
    alice = hooks.client_for(make_token(url, "alice", scopes))
    bob = hooks.client_for(make_token(url, "bob", scopes))
    mine = alice.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["import.completed"]}
    )
    theirs = bob.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["import.completed"]}
    )
    assert mine.status_code == theirs.status_code == 201
    mine_id, theirs_id = mine.json()["id"], theirs.json()["id"]
    path, _ = make(datadir, "users", "csv", 100, seed=13)
    res = alice.post(
        "/v1/imports", data={"resource": "users"}, files={"file": (path.name, path.read_bytes())}
    )
    assert res.status_code == 202, res.text
    hooks.wait(res.json()["job_id"])
    receiver.wait_for(1, why=hooks.logs)
    [delivery] = _until(
        lambda: alice.get(f"/v1/webhooks/{mine_id}/deliveries").json()["deliveries"],
        hooks,
        "a delivery",
    )
    assert bob.get(f"/v1/webhooks/{theirs_id}/deliveries").json()["deliveries"] == []

    base = f"/v1/webhooks/{mine_id}"
    for method, path_ in (
        ("GET", base),
        ("GET", f"{base}/deliveries"),
        ("POST", f"{base}/rotate-secret"),
        ("POST", f"{base}/deliveries/{delivery['id']}/redeliver"),
        ("DELETE", base),
    ):
        res = bob.request(method, path_)
        assert res.status_code == 404, (method, path_, res.text)
    assert [w["id"] for w in bob.get("/v1/webhooks").json()["webhooks"]] == [theirs_id]
    assert [w["id"] for w in alice.get("/v1/webhooks").json()["webhooks"]] == [mine_id]
    assert bob.get("/v1/webhooks", params={"owner": "alice"}).status_code == 403
    # an admin token sees every owner's
    admin = hooks.client.get("/v1/webhooks", params={"owner": "alice"}).json()["webhooks"]
    assert [w["id"] for w in admin] == [mine_id]
    assert hooks.client.get(base).json()["owner"] == "alice"
    assert alice.delete(base).status_code == 204
    assert alice.get(base).status_code == 404


def test_the_outbox_row_is_written_by_the_transaction_that_ends_the_job(
    hooks: Bulkio, receivers: list[Receiver]
) -> None:
    """Straight on the tables: ending a job writes its delivery in the same transaction (gone
    with a rollback), one per matching enabled endpoint of the job's owner, and NOTIFY wakes
    the delivery loops at commit."""
    receiver = Receiver().start()
    receivers.append(receiver)
    url = hooks.env["BULKIO_DATABASE_URL"]
    hooks_only = ["webhooks:write", "webhooks:read", "imports:read", "exports:read"]
    carol = hooks.client_for(make_token(url, "carol", hooks_only))
    ids = [
        carol.post("/v1/webhooks", json={"url": receiver.url, "event_types": types}).json()["id"]
        for types in (["import.failed"], ["import.failed", "export.failed"], ["import.completed"])
    ]
    job_id = str(uuid.uuid4())
    with psycopg.connect(url, autocommit=True) as conn, psycopg.connect(url) as tx:
        conn.execute("LISTEN bulkio_webhooks")
        conn.execute(
            # running under a live lease: the reconciler leaves it alone
            "INSERT INTO jobs (id, kind, resource, format, owner, status, started_at, "
            "lease_owner, lease_expires) VALUES (%s, 'import', 'users', 'csv', 'carol', "
            "'running', now(), 'test', now() + interval '1 hour')",
            (job_id,),
        )

        def end_job() -> list[tuple[Any, ...]]:
            tx.execute(
                "UPDATE jobs SET status = 'failed', error = 'boom', finished_at = now() "
                "WHERE id = %s",
                (job_id,),
            )
            return tx.execute(
                "SELECT endpoint_id::text, event_type, data->>'status', data->>'error' "
                "FROM webhook_deliveries WHERE job_id = %s ORDER BY endpoint_id",
                (job_id,),
            ).fetchall()

        inside = end_job()
        assert sorted(inside) == sorted([(i, "import.failed", "failed", "boom") for i in ids[:2]])
        tx.rollback()
        assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (0,)
        assert list(conn.notifies(timeout=0.5)) == []
        end_job()
        tx.commit()
        assert [n.channel for n in conn.notifies(timeout=10, stop_after=1)] == ["bulkio_webhooks"]
        rows = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE job_id = %s", (job_id,)
        ).fetchone()
        assert rows == (2,)
    receiver.wait_for(2, why=hooks.logs)


def test_every_attempt_of_a_delivery_pages_oldest_first(
    hooks: Bulkio, datadir: Path, receivers: list[Receiver]
) -> None:
    """The deliveries list shows each delivery's newest attempts; ``…/attempts`` pages through
    all of them (a delivery retried for days, and redelivered, has more than the list shows)."""
    receiver = Receiver()  # never listening: every attempt fails
    receivers.append(receiver)
    endpoint = _register(hooks, receiver.url, ["import.completed"])
    _import(hooks, datadir, seed=9)
    [delivery] = _until(
        lambda: [d for d in _deliveries(hooks, endpoint["id"]) if d["attempt_count"] >= 3],
        hooks,
        "three failed attempts",
    )
    base = f"/v1/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/attempts"
    seen: list[dict[str, Any]] = []
    url: str | None = f"{base}?limit=1"
    while url is not None and len(seen) < 50:
        res = hooks.client.get(url)
        assert res.status_code == 200, res.text
        page = res.json()
        assert len(page["attempts"]) <= 1
        seen += page["attempts"]
        url = page["next"]
    assert [a["attempt"] for a in seen] == list(range(1, len(seen) + 1))
    assert len(seen) >= delivery["attempt_count"] >= 3
    assert all(a["status_code"] is None and a["error"] for a in seen)
    assert hooks.client.get(f"{base}?after=x").status_code == 400
    missing = f"/v1/webhooks/{endpoint['id']}/deliveries/msg_{uuid.uuid4().hex}/attempts"
    assert hooks.client.get(missing).status_code == 404
