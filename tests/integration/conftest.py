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

from tests.support.database import TABLES, empty
from tests.support.service import TEST_ENV, Bulkio

# TEMPORARY: TABLES and TEST_ENV stay importable from here (`from conftest import TEST_ENV`)
# until every test imports them from tests.support.
__all__ = ["TABLES", "TEST_ENV", "bulkio", "datadir", "service"]

pytestmark = pytest.mark.integration


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
def service(bulkio: Bulkio, db: psycopg.Connection[Any], redis_server: Any) -> Iterator[Bulkio]:
    empty(db)
    redis_server.flush()
    bulkio.revive_workers()
    yield bulkio
    bulkio.close_clients()


@pytest.fixture(scope="session")
def datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")
