"""The queue seam: the Dramatiq broker, the actor's name and the doorbell.

Redis only rings a doorbell ("work on job X"); the job itself lives in PostgreSQL. The API rings
it after creating a job, the worker's reconciler rings it again for jobs whose message was lost.
Both import this module, which loads nothing of the pipelines, and Dramatiq only once a broker is
made. The consumer (the actor, the reconciler, the process loop) is :mod:`engine.worker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.settings import Settings

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker

#: The one actor: ``run_job(job_id)``.
ACTOR_NAME = "run_job"
#: A job may legitimately run for hours (1M rows is the normal case); leases, not this limit,
#: detect dead workers.
TIME_LIMIT_MS = 12 * 3600 * 1000


def create_broker(settings: Settings) -> RedisBroker:
    # Imported here, not at module level: importing this module (the API does) loads no part of
    # Dramatiq until a broker is made (in the API's lifespan, or by the worker).
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import AgeLimit, Retries, TimeLimit

    return RedisBroker(
        url=settings.redis_url,
        namespace="bulkio",
        middleware=[
            AgeLimit(),
            TimeLimit(time_limit=TIME_LIMIT_MS),
            Retries(max_retries=settings.max_attempts, min_backoff=500, max_backoff=15_000),
        ],
    )


class Doorbell:
    """Enqueues "work on job X" messages; used by the API and by the reconciler."""

    def __init__(self, settings: Settings, broker: RedisBroker | None = None) -> None:
        self.broker = broker or create_broker(settings)
        self.queue = settings.queue_name
        self.broker.declare_queue(self.queue)

    def ring(self, job_id: str) -> None:
        import dramatiq

        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=self.queue, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={}
        )
        self.broker.enqueue(message)

    def close(self) -> None:
        self.broker.close()
