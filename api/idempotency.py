"""The idempotent-create protocol of ``POST /v1/imports`` and ``POST /v1/exports``.

With an ``Idempotency-Key``:

1. :meth:`IdempotentCreate.reserve` before any work: the key is either reserved for this request,
   or already names a finished request (then nothing is created: :meth:`replay` answers with its
   job, ``Idempotent-Replayed: true``, or 422 when the request differs), or is still being
   accepted by another request (409, raised by ``engine.jobs.reserve_key``);
2. the job is created, then :meth:`created` binds the key to it and the request's digest;
3. if anything fails in between, :meth:`abandon` frees the key for a retry.

:func:`accepted` rings the doorbell and answers 202 with the job (``Location``, and
``Idempotent-Replayed: false`` when a key was given). The key rows live in PostgreSQL
(``engine.jobs``), scoped per owner.
"""

from __future__ import annotations

import logging

from litestar import Response

from api.schemas import JobView
from api.state import AppState
from api.views import events_url, job_view
from engine import jobs

log = logging.getLogger("bulkio.api")


class IdempotentCreate:
    """One create request's key (``key`` None: no key given; every method is then a no-op).
    Methods run blocking database calls: call them from a worker thread."""

    def __init__(self, app: AppState, owner: str, key: str | None) -> None:
        self.app = app
        self.owner = owner
        self.key = key
        #: The key names a finished request: replay it instead of creating anything.
        self.replaying = False

    def reserve(self) -> bool:
        """Reserve the key for this request; True when it already names a finished request."""
        if self.key is not None:
            self.replaying = isinstance(self.app.sync(jobs.reserve_key, self.owner, self.key), str)
        return self.replaying

    def replay(self, digest: str) -> Response[JobView]:
        """The earlier request's job (422 if ``digest`` says this request differs)."""
        assert self.key is not None and self.replaying
        job = self.app.sync(jobs.replay, self.owner, self.key, digest)
        view = job_view(
            job,
            base_url=self.app.settings.public_url,
            replayed=True,
            events_url=events_url(self.app, job),
        )
        return Response(view, status_code=202, headers={"Idempotent-Replayed": "true"})

    def created(self, job: jobs.Job, digest: str) -> None:
        """Bind the key to the job this request created."""
        if self.key is not None:
            self.app.sync(jobs.complete_key, self.owner, self.key, digest, job.id)

    def abandon(self) -> None:
        """Free a key this request reserved and did not bind (the request failed)."""
        if self.key is not None and not self.replaying:
            self.app.sync(jobs.release_key, self.owner, self.key)


def accepted(app: AppState, job: jobs.Job, location: str, keyed: bool) -> Response[JobView]:
    """Ring the doorbell and answer 202 with the new job. Redis down: the job stays queued and
    the reconciler enqueues it later."""
    try:
        app.doorbell.ring(job.id)
    except Exception:  # the reconciler re-enqueues a job whose message is lost
        log.warning("could not enqueue the job", extra={"job_id": job.id})
    headers = {"Location": location}
    if keyed:
        headers["Idempotent-Replayed"] = "false"
    return Response(
        job_view(job, base_url=app.settings.public_url, events_url=events_url(app, job)),
        status_code=202,
        headers=headers,
    )


__all__ = ["IdempotentCreate", "accepted"]
