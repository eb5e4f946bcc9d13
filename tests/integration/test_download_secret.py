"""Signed local download URLs work across API processes and restarts without BULKIO_SIGNING_SECRET:
the key is generated once and kept in PostgreSQL (table ``secrets``, migration 0006)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from engine.db import migrate
from engine.settings import Settings
from engine.storage import SIGNING_SECRET_NAME, signing_secret
from tests.support.service import TEST_ENV, Bulkio

pytestmark = pytest.mark.integration


@pytest.fixture
def two_apis(fresh_database: str, redis_server: Any, tmp_path: Path) -> Iterator[list[Bulkio]]:
    """Two API processes (the first with a worker) over one database and store, no secret set."""
    migrate(fresh_database)
    env = {
        **TEST_ENV,
        "BULKIO_SIGNING_SECRET": "",  # unset (an empty value is the default)
        "BULKIO_DATABASE_URL": fresh_database,
        # Apart from the session's service: its own Redis database and queue.
        "BULKIO_REDIS_URL": redis_server.url(7),
        "BULKIO_QUEUE_NAME": "download-secret-test",
        "BULKIO_STORAGE_URL": f"file://{tmp_path / 'objects'}",
        "BULKIO_METRICS_DIR": str(tmp_path / "metrics"),
    }
    started: list[Bulkio] = []
    try:
        for name, workers in (("a", 1), ("b", 0)):
            (tmp_path / name).mkdir()
            started.append(Bulkio(env, tmp_path / name, workers=workers))
        yield started
    finally:
        for service in started:
            service.stop()


def _on(service: Bulkio, url: str) -> str:
    """``url`` sent to ``service``'s API instead of the one that signed it."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{service.port}"))


def test_a_url_signed_by_one_api_process_verifies_in_another_and_after_a_restart(
    two_apis: list[Bulkio],
) -> None:
    a, b = two_apis
    res = a.client.post("/v1/exports", json={"resource": "users", "format": "csv"})
    assert res.status_code == 202, res.text
    job = a.wait(res.json()["job_id"], kind="exports")
    assert job["status"] == "completed", job
    from_a = job["download_url"]
    from_b = b.client.get(f"/v1/exports/{job['job_id']}").json()["download_url"]
    assert urlsplit(from_a).path == urlsplit(from_b).path == f"/v1/downloads/{job['job_id']}"

    expected = httpx.get(from_a, timeout=30)
    assert expected.status_code == 200, expected.text
    assert expected.content.startswith(b"id,email")
    for service, url in ((b, from_a), (a, from_b)):
        got = httpx.get(_on(service, url), timeout=30)
        assert (got.status_code, got.content) == (200, expected.content), got.text

    for service in (a, b):  # restarted processes still accept what the old ones signed
        assert service.api is not None
        service.api.stop()
        service.start_api()
        for url in (from_a, from_b):
            got = httpx.get(_on(service, url), timeout=30)
            assert got.status_code == 200, got.text

    tampered = _on(b, from_a).replace("signature=", "signature=0")
    assert httpx.get(tampered, timeout=30).status_code == 403
    with psycopg.connect(a.env["BULKIO_DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT name, octet_length(value) FROM secrets").fetchall()
    assert rows == [(SIGNING_SECRET_NAME, 32)]


def test_the_secret_is_made_once_and_the_setting_overrides_it(fresh_database: str) -> None:
    migrate(fresh_database)
    settings = Settings(database_url=fresh_database)
    with (
        psycopg.connect(fresh_database, autocommit=True) as one,
        psycopg.connect(fresh_database, autocommit=True) as other,
    ):
        first = signing_secret(one, settings)
        assert len(first) == 32
        assert signing_secret(other, settings) == first
        assert signing_secret(one, settings) == first
        chosen = Settings(database_url=fresh_database, signing_secret="operator-choice")
        assert signing_secret(other, chosen) == b"operator-choice"
        count = one.execute("SELECT count(*) FROM secrets").fetchone()
    assert count == (1,)


def test_an_api_without_the_migration_says_what_to_do(fresh_database: str) -> None:
    with (
        psycopg.connect(fresh_database, autocommit=True) as conn,
        pytest.raises(RuntimeError, match="run `bulkio migrate`"),
    ):
        signing_secret(conn, Settings(database_url=fresh_database))
