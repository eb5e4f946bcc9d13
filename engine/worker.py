"""The Dramatiq consumer: the one actor (``run_job``), the reconciler and the process loop
(which also runs the webhook delivery loop, engine/webhook_delivery.py).

With :mod:`engine.queue` (the broker and the doorbell), the only module that imports Dramatiq.
Redis only rings the doorbell ("work on job X"); the job itself lives in PostgreSQL, so a lost or
duplicated message never loses or duplicates data: a duplicate finds the job already claimed or
finished, and a lost one is re-sent by the reconciler, which every worker process runs (one at a
time, under an advisory lock).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from polars.exceptions import PanicException

from engine import db, jobs, metrics, retention
from engine.context import JobContext
from engine.errors import FileError
from engine.imports.run import run_import
from engine.queue import ACTOR_NAME, Doorbell, create_broker
from engine.resources import catalog
from engine.settings import Settings
from engine.storage import open_storage
from engine.webhook_delivery import DeliveryLoop

log = logging.getLogger("bulkio.worker")


def idle_ms(settings: Settings) -> int:
    """The server-side idle-in-transaction timeout of a worker's connections."""
    return db.idle_in_transaction_ms(settings.lease_seconds)


class Runtime:
    """Per-process state of a worker: settings, storage and lazily (re)opened connections."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = open_storage(settings)
        self.catalog = catalog(settings.user_roles)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self._conn: Any = None
        self._bulk: Any = None

    def context(self) -> JobContext:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(
                self.settings.database_url, name="bulkio-worker", idle_ms=idle_ms(self.settings)
            )
        if self._bulk is None:
            self._bulk = db.connect_bulk(
                self.settings.database_url, name="bulkio-worker", idle_ms=idle_ms(self.settings)
            )
        return JobContext(
            self.settings,
            self.storage,
            self.catalog,
            self._conn,
            self._bulk,
            self.worker_id,
            self.stopping,
        )

    def reset(self) -> None:
        """Drop connections after a failure; the next job opens fresh ones."""
        for conn in (self._conn, self._bulk):
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                log.debug("closing a broken connection failed", exc_info=True)
        self._conn = self._bulk = None

    def run_job(self, job_id: str) -> None:
        try:
            ctx = self.context()
            job = jobs.get(ctx.conn, job_id)
            if job is None or job.terminal:
                return
            if job.kind == "import":
                run_import(ctx, job_id)
            else:
                from engine.exports.run import run_export

                run_export(ctx, job_id)
        except (Exception, PanicException) as exc:
            # PanicException (a Rust panic in polars or the native module) derives from
            # BaseException; it must fail this attempt like any error, not kill the worker.
            error_id = uuid.uuid4().hex[:12]
            log.exception(
                "job attempt failed; it will be retried",
                extra={"job_id": job_id, "error_id": error_id},
            )
            self.reset()
            try:
                with db.connect(self.settings.database_url, name="bulkio-worker") as conn:
                    jobs.note_error(conn, job_id, self.worker_id, client_message(exc, error_id))
            except Exception:
                log.warning("could not record the failure", extra={"job_id": job_id})
            raise  # Dramatiq's worker catches BaseException and retries (bounded)


def client_message(exc: BaseException, error_id: str) -> str:
    """What the job's client may see of a failed attempt. A driver's or library's text can hold
    host names, SQL and values, so it stays in the log (under ``error_id``); only errors meant
    for the user (:class:`~engine.errors.FileError`) keep their own message."""
    if isinstance(exc, FileError):
        return str(exc)
    return f"internal error (id {error_id})"


def declare_actor(broker: RedisBroker, runtime: Runtime) -> dramatiq.Actor[[str], None]:
    return dramatiq.Actor(
        runtime.run_job,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=runtime.settings.queue_name,
        priority=0,
        options={},
    )


def reconcile_forever(settings: Settings, doorbell: Doorbell, stop: threading.Event) -> None:
    conn: Any = None
    while not stop.wait(settings.reconcile_seconds):
        try:
            if conn is None or conn.closed:
                conn = db.connect(
                    settings.database_url, name="bulkio-reconciler", idle_ms=idle_ms(settings)
                )
            for job_id, _kind in jobs.due_for_requeue(
                conn, settings.requeue_after_seconds, settings.max_attempts
            ):
                doorbell.ring(job_id)
                log.info("re-enqueued job", extra={"job_id": job_id})
        except Exception:
            log.warning("reconciler round failed", exc_info=True)
            conn = None


def run_worker(settings: Settings) -> None:
    """Serve jobs until SIGTERM/SIGINT; the running job is handed back at its next batch."""
    metrics.init(settings)
    broker = create_broker(settings)
    runtime = Runtime(settings)
    declare_actor(broker, runtime)
    doorbell = Doorbell(settings, broker)
    # queue_prefetch=1: a worker holds no message it is not working on, so a second job goes
    # to an idle worker instead of waiting behind the first (measured: 2 workers, 2 jobs, one
    # worker took both with Dramatiq's default prefetch of 2 per thread).
    worker = dramatiq.Worker(
        broker, queues={settings.queue_name}, worker_threads=1, worker_timeout=250
    )
    worker.queue_prefetch = 1  # read by the consumer threads that start() creates
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # Runs in the main thread between two of its bytecodes, possibly inside another call of
        # itself: take no lock here (a second signal arriving while the first handler held the
        # lock of the Event it was setting hung the worker for good). The main loop acts on it.
        received.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.start()
    reconciler = threading.Thread(
        target=reconcile_forever, args=(settings, doorbell, stop), name="reconciler", daemon=True
    )
    reconciler.start()
    threading.Thread(
        target=retention.cleanup_forever,
        args=(settings, runtime.storage, stop),
        name="retention",
        daemon=True,
    ).start()
    deliveries = threading.Thread(
        target=DeliveryLoop(settings, runtime.worker_id).run,
        args=(stop,),
        name="webhooks",
        daemon=True,
    )
    deliveries.start()
    log.info("worker ready", extra={"worker": runtime.worker_id, "queue": settings.queue_name})
    while not received:
        time.sleep(0.1)
    log.info("stopping", extra={"signal": received[0], "worker": runtime.worker_id})
    runtime.stopping.set()
    stop.set()
    started = time.monotonic()
    worker.stop(timeout=60_000)
    # Deliveries in flight end within their timeout; one cut short would be sent again anyway.
    deliveries.join(settings.webhook_timeout_seconds + settings.reconcile_seconds)
    broker.close()
    log.info("worker stopped", extra={"seconds": round(time.monotonic() - started, 2)})
