"""The Litestar application: ``create_app()`` is the factory granian serves (``--factory``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from psycopg_pool import ConnectionPool

from api.auth import TokenCache
from api.downloads import DownloadController
from api.error_pages import ErrorPageController
from api.event_hub import hub_lifespan
from api.events import JobEventsController
from api.exports import ExportController
from api.health import health, metrics_endpoint
from api.imports import ImportController
from api.jobs_routes import JobController
from api.limits import DEFAULT_BODY_BYTES, Slots
from api.openapi import describe_exports, describe_uploads
from api.problems import HANDLERS
from api.ratelimit import RateLimiter, add_rate_headers
from api.state import AppState, app_state
from api.ui import ROUTES as UI_ROUTES
from api.uploads import UploadController, UploadDataController
from api.webhooks import WebhookController
from engine import __version__, db
from engine.logs import setup_logging
from engine.metrics import init as metrics_init
from engine.queue import Doorbell
from engine.resources import catalog
from engine.settings import Settings, SettingsError, load_settings, warn_unknown
from engine.storage import open_storage, signing_secret


def create_app(settings: Settings | None = None) -> Litestar:
    from_environment = settings is None
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:  # stop the server with the message, not a traceback
            print(exc.report(), file=sys.stderr)
            raise SystemExit(2) from None
    setup_logging(settings.log_level)
    if from_environment:
        warn_unknown()
    metrics_init(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = ConnectionPool(
            db.conninfo(settings.database_url, "bulkio-api"),
            min_size=1,
            max_size=10,
            kwargs={"autocommit": True},
            open=True,
        )
        doorbell = Doorbell(settings)
        redis_client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        with pool.connection() as conn:
            secret = signing_secret(conn, settings)
        slots = Slots(pool, settings)
        slots.start()
        app.state.app = AppState(
            settings=settings,
            pool=pool,
            storage=open_storage(settings),
            doorbell=doorbell,
            catalog=catalog(settings.user_roles),
            signing_secret=secret,
            redis=redis_client,
            tokens=TokenCache(),
            slots=slots,
            ratelimit=RateLimiter(redis_client),
        )
        try:
            yield
        finally:
            slots.close()
            redis_client.close()
            doorbell.close()
            pool.close()

    routes: list[Any] = [
        health,
        metrics_endpoint,
        ImportController,
        ErrorPageController,
        JobController,
        JobEventsController,
        ExportController,
        DownloadController,
        WebhookController,
        UploadController,
        UploadDataController,
        *UI_ROUTES,
    ]
    app = Litestar(
        route_handlers=routes,
        lifespan=[lifespan, hub_lifespan(settings)],
        exception_handlers=HANDLERS,
        state=State(),
        # Handlers declare ``app: AppState`` and get the process's state injected.
        dependencies={"app": Provide(app_state, sync_to_thread=False)},
        openapi_config=OpenAPIConfig(
            title="bulkio",
            version=__version__,
            path="/schema",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}],
        ),
        before_send=[add_rate_headers],
        # Routes that read a body set their own limit (uploads: BULKIO_MAX_UPLOAD_BYTES).
        request_max_body_size=DEFAULT_BODY_BYTES,
    )
    describe_exports(app.openapi_schema, catalog(settings.user_roles))
    describe_uploads(app.openapi_schema, settings.max_upload_bytes)
    return app
