"""``GET /health``: PostgreSQL and Redis reachable (no token needed)."""

from __future__ import annotations

import redis
from litestar import Response, get
from litestar.openapi import ResponseSpec

from api.openapi import operation
from api.schemas import Health
from api.state import AppState
from engine import metrics


@get(
    "/metrics",
    sync_to_thread=True,
    summary="Prometheus metrics (API and workers)",
    media_type="text/plain",
    operation_class=operation(public=True),
)
def metrics_endpoint(app: AppState) -> Response[bytes]:
    with app.pool.connection(timeout=5) as conn:
        body, content_type = metrics.render(conn, app.redis, app.settings.queue_name)
    return Response(body, media_type=content_type)


@get(
    "/health",
    sync_to_thread=True,
    summary="Service health (PostgreSQL and Redis)",
    responses={
        503: ResponseSpec(
            Health, description="Degraded: PostgreSQL or Redis unreachable", generate_examples=False
        )
    },
    operation_class=operation(public=True),
)
def health(app: AppState) -> Response[Health]:
    pg = "ok"
    try:
        with app.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        pg = f"error: {type(exc).__name__}"
    rd = "ok"
    try:
        client = redis.Redis.from_url(app.settings.redis_url, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        rd = f"error: {type(exc).__name__}"
    ok = pg == "ok" and rd == "ok"
    return Response(Health("ok" if ok else "degraded", pg, rd), status_code=200 if ok else 503)
