"""Integration fixtures: one running bulkio (API + worker) per session over real servers.

Each test starts from empty tables and an empty queue (``service``); tests that kill workers
leave the fixture to restore one live worker for the next test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import Bulkio

from engine.db import migrate

pytestmark = pytest.mark.integration

#: Small batches so the 10k-row files of the tests span many batches (and checkpoints).
TEST_ENV = {
    "BULKIO_BATCH_ROWS": "1000",
    "BULKIO_LEASE_SECONDS": "5",
    "BULKIO_RECONCILE_SECONDS": "1",
    "BULKIO_REQUEUE_AFTER_SECONDS": "3",
    "BULKIO_SIGNING_SECRET": "test-secret",
    "BULKIO_LOG_LEVEL": "INFO",
}

TABLES = "comments, articles, users, job_errors, job_keys, idempotency_keys, jobs"


@pytest.fixture(scope="session")
def database_url(pg_server: Any) -> str:
    url = pg_server.create_database("bulkio_it")
    migrate(url)
    return str(url)


@pytest.fixture(scope="session")
def bulkio(
    database_url: str, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bulkio]:
    work = tmp_path_factory.mktemp("bulkio")
    env = {
        **TEST_ENV,
        "BULKIO_DATABASE_URL": database_url,
        "BULKIO_REDIS_URL": redis_server.url(),
        "BULKIO_STORAGE_URL": f"file://{work / 'objects'}",
        "BULKIO_METRICS_DIR": str(work / "metrics"),
    }
    service = Bulkio(env, work, workers=1)
    yield service
    service.stop()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def service(bulkio: Bulkio, db: psycopg.Connection[Any], redis_server: Any) -> Iterator[Bulkio]:
    db.execute(f"TRUNCATE {TABLES} CASCADE")
    redis_server.flush()
    for dead in [w for w in bulkio.workers if not w.alive()]:
        dead.stop()
        bulkio.workers.remove(dead)
    if not bulkio.workers:
        bulkio.start_worker()
    yield bulkio
    bulkio.close_clients()


@pytest.fixture(scope="session")
def datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")
