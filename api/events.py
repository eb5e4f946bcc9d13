"""``GET /v1/jobs/{id}/events``: a job's event log (engine/events.py), as JSON pages or, with
``Accept: text/event-stream``, as Server-Sent Events that follow the job to its end.

Credentials: a bearer token that may read the job (its owner's, or admin; the kind's read
scope), or the signed ``events_url`` of the job view (``expires`` + ``signature``, an HMAC over
this path of this job only), since a browser's EventSource cannot send an Authorization header.

A stream sends every event after ``Last-Event-ID`` (or ``after``) as ``id: <seq>``,
``event: <type>``, ``data: <the event as JSON>``, then waits, holding no database connection,
until the process's LISTEN connection (api/event_hub.py) says the job has new ones; a
``: keep-alive`` comment goes out every BULKIO_EVENTS_HEARTBEAT_SECONDS meanwhile. It ends after
the terminal event. A job that has ended with nothing left to send answers 204, which tells an
EventSource to stop reconnecting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, Request, Response, get
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.params import HeaderParameter, Parameter
from litestar.response import Stream

from api.auth import authorize, principal_of, require_kind_scope
from api.event_hub import EventHub
from api.job_query import only_known
from api.openapi import event_stream_operation
from api.problems import GUARDED, Problem, problem_responses
from api.schemas import EventPage, EventView
from api.state import AppState
from api.views import events_path
from engine import events, jobs
from engine.events import Event
from engine.jobs import Job
from engine.storage import verify_signature

#: Events per JSON page: default and most.
PAGE_DEFAULT, PAGE_MAX = 100, 1000
#: Events read from the table at once by a stream.
STREAM_PAGE = 500
#: Largest sequence number (``job_events.seq`` is an integer).
MAX_SEQ = 2**31 - 1
EVENT_STREAM = "text/event-stream"
HEARTBEAT = b": keep-alive\n\n"


def wants_stream(accept: str | None) -> bool:
    """Whether the Accept header asks for ``text/event-stream``."""
    if not accept:
        return False
    return any(part.split(";")[0].strip().lower() == EVENT_STREAM for part in accept.split(","))


def _number(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit():
        raise Problem(400, f"{name} must be a whole number from {low} to {high}; got {raw!r}")
    value = int(text)
    if not low <= value <= high:
        raise Problem(400, f"{name} must be from {low} to {high}; got {value}")
    return value


def _sequence(name: str, raw: str | None) -> int:
    """A sequence number to resume after; any larger than MAX_SEQ means 'after everything'."""
    if raw is None or raw.strip() == "":
        return 0
    text = raw.strip()
    if not text.isascii() or not text.isdigit():
        raise Problem(400, f"{name} must be an event sequence number (0, 1, 2, ...); got {raw!r}")
    return min(int(text), MAX_SEQ)


def view(event: Event) -> EventView:
    created = event.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return EventView(seq=event.seq, type=event.type, created=created, data=event.data)


def sse(event: Event) -> bytes:
    """One event on the wire: ``id``, ``event`` and a one-line JSON ``data``."""
    data = msgspec.json.encode(view(event))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), data)


async def follow(
    app: AppState, hub: EventHub, job_id: str, after: int, heartbeat: float
) -> AsyncIterator[bytes]:
    """The job's events after ``after`` as they come, up to and including the terminal one."""
    # Subscribed before the first read: a NOTIFY during the read is kept by `wake`.
    with hub.subscribe(job_id) as wake:
        while True:
            wake.clear()
            got = await app.run(events.page, job_id, after, STREAM_PAGE)
            for event in got:
                yield sse(event)
                after = event.seq
                if event.terminal:
                    return
            if len(got) == STREAM_PAGE:
                continue
            while not wake.is_set():
                try:
                    await asyncio.wait_for(wake.wait(), heartbeat)
                except TimeoutError:
                    yield HEARTBEAT


async def authorize_events(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """A valid signature of this job's events path, or the bearer-token guard of /v1."""
    query = connection.query_params
    if "signature" not in query and "expires" not in query:
        await authorize(connection, handler)
        return
    app: AppState = connection.app.state.app
    job_id = connection.path_params["job_id"]
    if not verify_signature(
        app.signing_secret,
        events_path(job_id),
        query.get("expires", ""),
        query.get("signature", ""),
    ):
        raise Problem(
            403,
            "this events URL is invalid or has expired; GET /v1/jobs/"
            f"{job_id} gives a fresh events_url",
        )
    connection.state.principal = None


def _job(app: AppState, request: Request[Any, Any, Any], job_id: str) -> Job:
    principal = getattr(request.state, "principal", None)
    if principal is None:  # a signed URL: this job, whoever owns it
        job = app.sync(jobs.get, job_id)
    else:
        job = app.sync(jobs.get, job_id, principal_of(request).owner_filter())
    if job is None:
        raise Problem(404, f"no job {job_id}")
    if principal is not None:
        require_kind_scope(principal, job.kind, "read")
    return job


class JobEventsController(Controller):
    path = "/v1/jobs/{job_id:str}/events"
    tags = ["jobs"]
    guards = [authorize_events]

    @get(
        "/",
        summary="A job's events: a JSON page, or Server-Sent Events until the job ends",
        description=(
            "Events in order, each with a per-job sequence number `seq` (1, 2, ... without "
            "gaps): `queued`, `started`, `progress` (after each committed batch: counters, "
            "`rows_per_sec`), `warning`, `retrying` (`attempt`, `reason`), and one terminal "
            "`completed` / `failed` / `cancelled` with the final counters.\n\n"
            "JSON: the events after `after`, at most `limit`; ask again with "
            "`after=next_after`.\n\n"
            "`Accept: text/event-stream`: Server-Sent Events (`id:` the seq, `event:` the type, "
            "`data:` the event as JSON) after `Last-Event-ID` (or `after`), a `: keep-alive` "
            "comment every 15 s (BULKIO_EVENTS_HEARTBEAT_SECONDS), ending after the terminal "
            "event; 204 when the job has ended and nothing follows.\n\n"
            "Credentials: a bearer token, or the `expires` and `signature` of the job view's "
            "`events_url` (for EventSource; this job's events only)."
        ),
        responses=problem_responses(*GUARDED, 404),
        operation_class=event_stream_operation(),
        sync_to_thread=True,
    )
    def events(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        state: State,
        job_id: str,
        after: str = Parameter(
            default="",
            description="Events with a larger sequence number than this (default 0: all).",
            schema_extra={"type": "integer", "minimum": 0, "default": 0},
        ),
        limit: str = Parameter(
            default="",
            description="JSON: events per page.",
            schema_extra={
                "type": "integer",
                "minimum": 1,
                "maximum": PAGE_MAX,
                "default": PAGE_DEFAULT,
            },
        ),
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID",
                required=False,
                description="Server-Sent Events: resume after this sequence number (wins over "
                "`after`; EventSource sends it when it reconnects).",
                schema_extra={"one_of": None, "type": "string", "pattern": r"^[0-9]+$"},
            ),
        ] = None,
        expires: str = Parameter(
            default="", description="Signed events_url: Unix time the URL expires at"
        ),
        signature: str = Parameter(
            default="", description="Signed events_url: HMAC-SHA256 of path and expiry"
        ),
    ) -> Response[EventPage]:
        only_known(request.query_params, ("after", "limit", "expires", "signature"))
        start = _sequence("after", after)
        size = _number("limit", limit, PAGE_DEFAULT, 1, PAGE_MAX)
        job = _job(app, request, job_id)
        if not wants_stream(request.headers.get("accept")):
            got = app.sync(events.page, job.id, start, size)
            page = EventPage(
                events=[view(e) for e in got], next_after=got[-1].seq if got else start
            )
            return Response(page, headers={"Cache-Control": "no-store"})
        if last_event_id is not None:
            start = _sequence("Last-Event-ID", last_event_id)
        if job.terminal and int(job.event_seq) <= start:
            return Response(None, status_code=204)  # type: ignore[arg-type]
        hub: EventHub = state.event_hub
        if hub.full:
            raise Problem(
                503,
                "this API process serves as many event streams as it can; retry shortly",
                headers={"Retry-After": "5"},
            )
        stream = Stream(
            follow(app, hub, job.id, start, app.settings.events_heartbeat_seconds),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        return cast("Response[EventPage]", stream)
