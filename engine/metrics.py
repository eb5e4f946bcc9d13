"""Prometheus metrics, safe across processes (granian workers, one worker process per core).

Counters and histograms live in ``prometheus_client``'s multi-process directory
(``BULKIO_METRICS_DIR``); :func:`init` must run before the first metric is touched in each
process. Job counts by status and queue depth are read at scrape time from PostgreSQL and Redis,
so they are exact and shared by every machine.
"""

from __future__ import annotations

import contextlib
import os
import socket
from functools import cache
from pathlib import Path
from typing import Any

from engine.settings import Settings

#: Batch duration buckets (seconds): batches are tens of thousands of rows.
BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


def init(settings: Settings) -> None:
    """Point prometheus_client at the shared directory (before it is first used)."""
    path = Path(settings.metrics_dir or ".data/metrics").absolute()
    path.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(path))
    # prometheus_client names its files by pid; processes of different containers (or machines)
    # sharing the directory can have the same pid, so the host name goes into the file name too.
    from prometheus_client import values

    host = socket.gethostname()
    values.ValueClass = values.MultiProcessValue(lambda: f"{host}-{os.getpid()}")


@cache
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "rows": Counter("bulkio_rows_imported", "Records committed by imports", ["resource"]),
        "rejected": Counter("bulkio_rows_rejected", "Records rejected by imports", ["resource"]),
        "exported": Counter(
            "bulkio_rows_exported", "Records written by exports", ["resource", "format"]
        ),
        "batch": Histogram(
            "bulkio_batch_seconds",
            "Time to validate and commit one batch",
            ["resource"],
            buckets=BATCH_BUCKETS,
        ),
        "jobs": Counter(
            "bulkio_jobs_finished", "Jobs reaching a terminal state", ["kind", "status"]
        ),
        "unlimited": Counter(
            "bulkio_rate_limit_unavailable",
            "Requests let through without a rate-limit check because Redis was unreachable",
        ),
        "stalled": Counter(
            "bulkio_streams_stalled", "Streamed responses closed because the client stopped reading"
        ),
        "event_streams": Gauge(
            "bulkio_event_streams",
            "Server-Sent Events streams of job events open in the API processes",
            multiprocess_mode="livesum",
        ),
    }


def batch_committed(resource: str, successful: int, failed: int, seconds: float) -> None:
    m = _metrics()
    m["rows"].labels(resource).inc(successful)
    m["rejected"].labels(resource).inc(failed)
    m["batch"].labels(resource).observe(seconds)


def rows_exported(resource: str, fmt: str, rows: int) -> None:
    _metrics()["exported"].labels(resource, fmt).inc(rows)


def job_finished(kind: str, status: str) -> None:
    _metrics()["jobs"].labels(kind, status).inc()


def rate_limit_unavailable() -> None:
    _metrics()["unlimited"].inc()


def stream_stalled() -> None:
    _metrics()["stalled"].inc()


def event_streams(change: int) -> None:
    """An event stream opened (+1) or closed (-1)."""
    _metrics()["event_streams"].inc(change)


def render(conn: Any, redis_client: Any, queue: str) -> tuple[bytes, str]:
    """The exposition text: multi-process counters plus live job and queue gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)

    class Live:
        def collect(self) -> Any:
            jobs = GaugeMetricFamily(
                "bulkio_jobs", "Jobs by kind and status", labels=["kind", "status"]
            )
            for kind, status, count in conn.execute(
                "SELECT kind, status, count(*) FROM jobs GROUP BY 1, 2"
            ):
                jobs.add_metric([kind, status], count)
            yield jobs
            depth = GaugeMetricFamily(
                "bulkio_queue_depth", "Messages waiting in the Redis queue", labels=["queue"]
            )
            # Redis down: the gauge is left out of this scrape.
            with contextlib.suppress(Exception):
                depth.add_metric([queue], int(redis_client.llen(f"bulkio:{queue}")))
            yield depth

    registry.register(Live())  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
