"""Benchmark session: its own PostgreSQL (production-like durable settings, see
``database.BENCH_PG_SETTINGS``), Redis, one bulkio API, the generated 1M-row files, and the final
table of figures, ratios and targets (printed at the end, written to ``bench/results/``).

Run with ``make bench`` (``pytest bench/ --benchmark-only -p no:cacheprovider``). Modules run in
the order of ``MODULE_ORDER``; each benchmark also prepares its own tables, so one module or one
test can be run alone (``pytest bench/test_export.py --benchmark-only``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

# bench/ has no __init__.py: pytest puts it on sys.path to import this file, so bench's own
# modules import by name; the project root (pythonpath in pyproject.toml) gives tests.support.
from database import BenchDatabase, start_server
from report import RESULTS, Recorder, source_state, write_results
from service import BenchService

from tests.support.servers import RedisServer

MODULE_ORDER = ("test_checks", "test_import", "test_export", "test_memory", "test_workers")
_RECORDER = pytest.StashKey[Recorder]()
_STARTED = pytest.StashKey[datetime]()


def pytest_configure(config: pytest.Config) -> None:
    recorder = Recorder()
    # Workers load engine/ when they start: note the source state at the start and at the end
    # (write_results) in case someone commits or edits while the suite runs.
    recorder.meta["source_at_start"] = source_state()
    config.stash[_RECORDER] = recorder
    config.stash[_STARTED] = datetime.now(UTC)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.stem if hasattr(item, "path") else ""
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=rank)  # stable: definition order inside a module


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config
                            ) -> None:  # fmt: skip
    recorder = config.stash.get(_RECORDER, None)
    if recorder is None or not recorder.measurements:
        return
    text, path = write_results(recorder, config.stash[_STARTED])
    terminalreporter.section("bulkio benchmark")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"\nwritten to {path} and {path.with_suffix('.md')}")


@pytest.fixture(scope="session")
def recorder(pytestconfig: pytest.Config) -> Recorder:
    return pytestconfig.stash[_RECORDER]


@pytest.fixture(scope="session")
def database(recorder: Recorder) -> Iterator[BenchDatabase]:
    server = start_server()
    try:
        db = BenchDatabase(server)
        recorder.meta["postgres"] = {"version": db.version(), "settings": db.settings()}
        yield db
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def service(database: BenchDatabase, redis: RedisServer, recorder: Recorder,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchService]:  # fmt: skip
    """The API with no worker: each benchmark starts the fresh workers it needs. Their logs go
    to ``bench/results/logs/`` (kept until the next run), the uploads to a temporary directory."""
    work = RESULTS / "logs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    objects = tmp_path_factory.mktemp("bulkio-bench") / "objects"
    env = {
        "BULKIO_DATABASE_URL": database.url,
        "BULKIO_REDIS_URL": redis.url(),
        "BULKIO_STORAGE_URL": f"file://{objects}",
        "BULKIO_SIGNING_SECRET": "bench-secret",
    }
    # The product's defaults are what we measure (batch size included): pass the environment
    # through except for BULKIO_* settings someone may have exported in this shell.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BULKIO_", "PG"))}
    svc = BenchService({**base, **env}, work)
    recorder.meta["logs"] = str(work)
    try:
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(objects, ignore_errors=True)  # GBs of uploads; the logs stay
