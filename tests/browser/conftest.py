"""Browser fixtures: the web page in headless Chromium (Debian's ``chromium`` package, driven by
Playwright for Python) against a real bulkio (API + worker over the session's PostgreSQL and
Redis), built from tests/support like the integration tests' service.

The service has its own database and queue name, so it never shares work with the integration
tests' service in the same session. Every page records each request it makes; a test fails if
one leaves the server's origin, if the page throws, or if the Content-Security-Policy refused
anything.

Chromium must be installed (``.ci/setup.sh`` does it): without it these tests fail, never skip.
Screenshots go to ``$BULKIO_BROWSER_ARTIFACTS`` (default ``tests/browser/artifacts/``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Playwright,
    Request,
    expect,
    sync_playwright,
)

from tests.browser.webpage import WATCH_CSP, WIDE, Session
from tests.support.database import empty, migrated_database
from tests.support.service import TEST_ENV, Bulkio, make_token

HERE = Path(__file__).resolve().parent
#: The browser tests' service: a database and a queue of its own, so the integration tests'
#: service in the same session never takes its jobs.
WEB_ENV = {**TEST_ENV, "BULKIO_QUEUE_NAME": "bulkio_browser"}
#: Where Debian's package puts the browser; BULKIO_CHROMIUM overrides it.
CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str:
    path = os.environ.get("BULKIO_CHROMIUM") or shutil.which("chromium") or CHROMIUM
    if not Path(path).is_file():
        pytest.fail(
            f"Chromium is not installed ({path} not found): the browser tests need Debian's "
            "`chromium` package. Run .ci/setup.sh (or `apt-get install chromium`), or set "
            "BULKIO_CHROMIUM to a Chromium binary.",
            pytrace=False,
        )
    return path


# A job's outcome may take a few seconds on a busy machine (the worker polls nothing: it waits
# for its queue message).
expect.set_options(timeout=30_000)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("BULKIO_BROWSER_ARTIFACTS") or HERE / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser_database_url(pg_server: Any) -> Iterator[str]:
    yield from migrated_database(pg_server, "bulkio_browser")


@pytest.fixture(scope="session")
def datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data files (tests/support/datafiles.py), cached for the session."""
    return tmp_path_factory.mktemp("web-data")


@pytest.fixture(scope="session")
def web_bulkio(
    browser_database_url: str, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bulkio]:
    work = tmp_path_factory.mktemp("bulkio-web")
    env = {
        **WEB_ENV,
        "BULKIO_DATABASE_URL": browser_database_url,
        "BULKIO_REDIS_URL": redis_server.url(),
        "BULKIO_STORAGE_URL": f"file://{work / 'objects'}",
        "BULKIO_METRICS_DIR": str(work / "metrics"),
    }
    service = Bulkio(env, work, workers=1)
    yield service
    service.stop()


@pytest.fixture
def web(web_bulkio: Bulkio, browser_database_url: str) -> Iterator[Bulkio]:
    """The service with empty tables and a live worker."""
    with psycopg.connect(browser_database_url, autocommit=True) as conn:
        empty(conn)
    web_bulkio.revive_workers()
    yield web_bulkio
    web_bulkio.close_clients()


@pytest.fixture
def token(web: Bulkio, browser_database_url: str) -> str:
    """A token of the page's user (admin scopes, no rate limit to trip over)."""
    return make_token(browser_database_url, "web-user", ["admin"], requests_per_minute=10**6)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
    yield browser
    browser.close()


@contextmanager
def open_tab(browser: Browser, origin: str) -> Iterator[Session]:
    """A fresh browser context (its own sessionStorage) at 1440 px, downloads accepted, on the
    page at ``origin``; checks on the way out what the page did."""
    context = browser.new_context(
        viewport={"width": WIDE, "height": 1000}, accept_downloads=True, locale="en-GB"
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    session = Session(page, context, origin)

    def on_request(request: Request) -> None:
        if not request.url.startswith(("blob:", "data:", "about:")):
            session.requests.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        # A refused request is logged as an error by Chromium itself; the tests check those.
        if message.type == "error" and "Failed to load resource" not in message.text:
            session.errors.append(f"console: {message.text}")

    context.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: session.errors.append(f"page error: {exc}"))
    page.add_init_script(WATCH_CSP)
    try:
        yield session
        violations = session.csp_violations()
    finally:
        context.close()
    assert session.foreign() == [], "the page made requests to another origin"
    assert violations == [], "the Content-Security-Policy refused something"
    assert session.errors == [], "the page logged errors"


@pytest.fixture
def tab(browser: Browser, web: Bulkio) -> Iterator[Session]:
    """The page at the service's BULKIO_PUBLIC_URL."""
    with open_tab(browser, f"http://127.0.0.1:{web.port}") as session:
        yield session


@pytest.fixture
def localhost_tab(browser: Browser, web: Bulkio) -> Iterator[Session]:
    """The page reached by another name than BULKIO_PUBLIC_URL's (``localhost``): the URLs the
    API builds (events_url, next, download_url) name another origin than the page's."""
    with open_tab(browser, f"http://localhost:{web.port}") as session:
        yield session
