"""Webhooks under the default, strict SSRF guard (the session's service: no
BULKIO_WEBHOOK_ALLOW_PRIVATE): private targets are refused at registration with a reason, and an
endpoint that points at one anyway (written straight into the table, as if its DNS had changed
since) is refused again at delivery, without a connection ever reaching it. Also: request
validation and scopes."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.datafiles import make
from tests.support.service import Bulkio, make_token
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket listening on loopback: a delivery that reached it would be accepted here."""
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


@pytest.fixture
def owner(db: psycopg.Connection[Any]) -> Iterator[str]:
    """An owner of its own: endpoints of the shared service's usual owner would outlive the test."""
    name = f"guard-{uuid.uuid4().hex[:8]}"
    yield name
    db.execute("DELETE FROM webhook_endpoints WHERE owner = %s", (name,))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1:{port}/hook", "loopback"),
        ("https://localhost:{port}/hook", "loopback"),
        ("https://[::1]:{port}/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]:{port}/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://172.20.0.5/hook", "private"),
        ("https://192.168.1.10/hook", "private"),
        ("https://[fd00::5]/hook", "private"),
        ("https://100.64.1.1/hook", "shared"),
        ("https://169.254.169.254/latest/meta-data", "link_local"),
        ("https://[fe80::1]/hook", "link_local"),
        ("https://224.0.0.251/hook", "multicast"),
        ("https://0.0.0.0:{port}/hook", "unspecified"),
        ("https://255.255.255.255/hook", "broadcast"),
        ("https://240.0.0.1/hook", "reserved"),
        ("http://127.0.0.1:{port}/hook", "scheme"),
        ("http://hooks.example.com/hook", "scheme"),
        ("https://user:pw@hooks.example.com/hook", "credentials"),
        ("https://no-such-host.invalid/hook", "unresolvable"),
    ],
)
def test_registration_refuses_private_targets_naming_the_reason(
    service: Bulkio, listener: socket.socket, url: str, reason: str
) -> None:
    port = listener.getsockname()[1]
    res = service.client.post(
        "/v1/webhooks",
        json={"url": url.format(port=port), "event_types": ["import.completed"]},
    )
    assert res.status_code == 400, res.text
    body = res.json()
    assert res.headers["content-type"].startswith("application/problem+json")
    assert body["reason"] == reason and "webhook URL refused" in body["detail"]
    assert _connections(listener) == 0


def test_a_private_address_is_refused_again_at_delivery_and_never_connected_to(
    service: Bulkio,
    listener: socket.socket,
    owner: str,
    db: psycopg.Connection[Any],
    database_url: str,
    datadir: Path,
) -> None:
    port = listener.getsockname()[1]
    endpoint_id = str(uuid.uuid4())
    # As if the endpoint had been registered while its name resolved to a public address.
    db.execute(
        "INSERT INTO webhook_endpoints (id, owner, url, event_types, secret) "
        "VALUES (%s, %s, %s, %s, %s)",
        (endpoint_id, owner, f"https://localhost:{port}/hook", ["import.completed"], "whsec_AAAA"),
    )
    token = make_token(database_url, owner, ["imports:write", "imports:read", "webhooks:read"])
    client = service.client_for(token)
    path, _ = make(datadir, "users", "csv", 100, seed=31)
    res = client.post(
        "/v1/imports", data={"resource": "users"}, files={"file": (path.name, path.read_bytes())}
    )
    assert res.status_code == 202, res.text
    assert service.wait(res.json()["job_id"])["status"] == "completed"

    def attempted() -> list[dict[str, Any]] | None:
        got = client.get(f"/v1/webhooks/{endpoint_id}/deliveries").json()["deliveries"]
        return got if got and got[0]["attempts"] else None

    [delivery] = wait_until(attempted, 60, 0.2, lambda: f"a delivery attempt\n{service.logs()}")
    attempt = delivery["attempts"][0]
    assert attempt["status_code"] is None
    assert "loopback" in attempt["error"] and "refused" in attempt["error"]
    assert delivery["state"] == "pending"  # refusals are retried: the name may resolve again
    assert _connections(listener) == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "https://hooks.example.com/x", "event_types": []}, "event_types"),
        (
            {"url": "https://hooks.example.com/x", "event_types": ["import.started"]},
            "import.started",
        ),
        ({"url": "https://hooks.example.com/x"}, "event_types"),
        ({"event_types": ["import.completed"]}, "url"),
        ({"url": "https://h.example.com", "event_types": ["import.failed"], "x": 1}, "x"),
        ({"url": 5, "event_types": ["import.failed"]}, "url"),
        (
            {
                "url": "https://h.example.com",
                "event_types": ["import.failed"],
                "description": "d" * 201,
            },
            "description",
        ),
        ({"url": "https://h.example.com/" + "a" * 2100, "event_types": ["import.failed"]}, "2048"),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    service: Bulkio, body: dict[str, Any], needle: str
) -> None:
    res = service.client.post("/v1/webhooks", json=body)
    assert res.status_code == 400, res.text
    assert needle in res.text


def test_scopes(service: Bulkio, database_url: str, owner: str) -> None:
    reader = service.client_for(make_token(database_url, owner, ["imports:read", "imports:write"]))
    body = {"url": "https://h.example.com/x", "event_types": ["import.completed"]}
    res = reader.post("/v1/webhooks", json=body)
    assert res.status_code == 403 and "webhooks:write" in res.json()["detail"]
    res = reader.get("/v1/webhooks")
    assert res.status_code == 403 and "webhooks:read" in res.json()["detail"]
    hooks_only = service.client_for(
        make_token(database_url, owner, ["webhooks:write", "webhooks:read", "imports:read"])
    )
    res = hooks_only.post("/v1/webhooks", json={**body, "event_types": ["export.completed"]})
    assert res.status_code == 403 and "exports:read" in res.json()["detail"]
    assert hooks_only.get("/v1/webhooks").json() == {"webhooks": []}
    res = hooks_only.get("/v1/webhooks", params={"owner": "someone-else"})
    assert res.status_code == 403
