"""Tokens, scopes, ownership and per-token limits, over real HTTP."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from engine.auth import create_token, revoke_token
from tests.support.service import Bulkio, make_token

pytestmark = pytest.mark.integration

USERS = (
    b"id,email,name,role,created_at\n"
    b"11111111-1111-4111-8111-111111111111,a@example.com,A,admin,2024-01-01T00:00:00Z\n"
)


def upload(client: Any, key: str | None = None, data: bytes = USERS) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(
        "/v1/imports", data={"resource": "users"}, files={"file": ("u.csv", data)}, headers=headers
    )


def test_health_needs_no_token_but_every_v1_route_does(service: Bulkio) -> None:
    anonymous = service.client_for(None)
    assert anonymous.get("/health").status_code == 200
    for method, path in [
        ("GET", "/v1/jobs/00000000-0000-4000-8000-000000000000"),
        ("GET", "/v1/imports/00000000-0000-4000-8000-000000000000"),
        ("POST", "/v1/imports"),
    ]:
        res = anonymous.request(method, path)
        assert res.status_code == 401, (path, res.text)
        assert res.headers["content-type"].startswith("application/problem+json")
        assert res.headers["www-authenticate"].startswith("Bearer")
    bad = service.client_for("bk_not-a-real-token")
    assert bad.get("/v1/jobs/00000000-0000-4000-8000-000000000000").status_code == 401


def test_revoked_tokens_are_refused(service: Bulkio, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        token_id, token = create_token(conn, "carol", ["imports:read"])
        assert revoke_token(conn, token_id)
    assert service.client_for(token).get("/v1/jobs/x").status_code == 401


def test_scopes_are_enforced(service: Bulkio, database_url: str) -> None:
    reader = service.client_for(make_token(database_url, "dave", ["imports:read"]))
    res = upload(reader)
    assert res.status_code == 403 and "imports:write" in res.json()["detail"]
    writer = service.client_for(make_token(database_url, "dave", ["imports:write"]))
    job_id = upload(writer).json()["job_id"]
    assert writer.get(f"/v1/imports/{job_id}").status_code == 403
    assert reader.get(f"/v1/imports/{job_id}").status_code == 200
    exporter = service.client_for(make_token(database_url, "dave", ["exports:read"]))
    assert exporter.get(f"/v1/jobs/{job_id}").status_code == 403
    assert reader.get(f"/v1/jobs/{job_id}").status_code == 200


def test_jobs_and_reports_are_visible_only_to_their_owner_or_admin(
    service: Bulkio, database_url: str
) -> None:
    alice = service.client_for(make_token(database_url, "alice", ["imports:write", "imports:read"]))
    bob = service.client_for(make_token(database_url, "bob", ["imports:write", "imports:read"]))
    job_id = upload(alice).json()["job_id"]
    service.wait(job_id)
    for path in (f"/v1/imports/{job_id}", f"/v1/imports/{job_id}/errors", f"/v1/jobs/{job_id}"):
        assert alice.get(path).status_code == 200, path
        res = bob.get(path)
        assert res.status_code == 404, path
        assert job_id not in res.text or "no " in res.json()["detail"]
    assert bob.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
    assert service.client.get(f"/v1/imports/{job_id}").status_code == 200  # admin


def test_idempotency_keys_are_scoped_per_owner(service: Bulkio, database_url: str) -> None:
    alice = service.client_for(make_token(database_url, "alice", ["imports:write"]))
    bob = service.client_for(make_token(database_url, "bob", ["imports:write"]))
    a1, a2 = upload(alice, "same-key"), upload(alice, "same-key")
    b1 = upload(bob, "same-key")
    assert a1.json()["job_id"] == a2.json()["job_id"]
    assert b1.status_code == 202 and b1.json()["job_id"] != a1.json()["job_id"]


def test_rate_limit_is_per_token_and_ignores_forwarded_headers(
    service: Bulkio, database_url: str
) -> None:
    token = make_token(database_url, "erin", ["imports:read"], requests_per_minute=3)
    client = service.client_for(token)
    path = "/v1/jobs/00000000-0000-4000-8000-000000000000"
    codes = [
        client.get(path, headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(5)
    ]
    assert codes[:3] == [404, 404, 404]
    assert codes[3:] == [429, 429]
    res = client.get(path)
    assert res.status_code == 429 and 1 <= int(res.headers["retry-after"]) <= 60
    other = service.client_for(make_token(database_url, "erin", ["imports:read"]))
    assert other.get(path).status_code == 404  # a different token has its own budget


def test_running_jobs_limit_per_token(
    service: Bulkio, database_url: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        token_id, token = create_token(conn, "frank", ["imports:write"], max_running_jobs=1)
    db.execute(
        "INSERT INTO jobs (id, kind, resource, format, owner, token_id, status) "
        "VALUES (gen_random_uuid(), 'import', 'users', 'csv', 'frank', %s, 'running')",
        (token_id,),
    )
    res = upload(service.client_for(token))
    assert res.status_code == 429
    assert res.headers["retry-after"] == "5"
