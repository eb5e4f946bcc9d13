"""``/v1/jobs``: the list (newest first, cursor pages), any job by id, and cancellation."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.spec import OpenAPIType
from litestar.params import Parameter

from api import job_query
from api.auth import authorize, principal_of, require_kind_scope
from api.problems import GUARDED, Problem, problem_responses
from api.schemas import JobList, JobView
from api.state import AppState
from api.views import download_url, events_url, job_view, load_job_view
from engine import job_list, jobs
from engine.jobs import Job
from engine.resources import RESOURCE_NAMES


def _optional(**schema: Any) -> dict[str, Any]:
    """``schema_extra`` of an optional query parameter: a plain string schema (Litestar would
    document ``str | None`` as ``oneOf: [string, null]``, which a query string cannot send)."""
    return {"one_of": None, "type": OpenAPIType.STRING, **schema}


#: The list's query parameters, as the next link repeats them.
LIST_PARAMS = ("kind", "resource", "status", "created_after", "created_before", "owner")


def _list_item(app: AppState, job: Job) -> JobView:
    url = download_url(app, job) if job.status == "completed" and job.result_key else None
    return job_view(
        job,
        base_url=app.settings.public_url,
        download_url=url,
        download_ttl=app.settings.download_url_ttl_seconds,
        inline_errors=False,
        events_url=events_url(app, job),
    )


class JobController(Controller):
    path = "/v1/jobs"
    tags = ["jobs"]
    guards = [authorize]

    @get(
        "/",
        sync_to_thread=True,
        summary="List jobs, newest first, a page at a time",
        description=(
            "The token owner's jobs (an admin token: everyone's, or one `owner`'s), newest "
            "first. Each item is the job view of `GET /v1/jobs/{job_id}` without the inline "
            '`errors`. `next` (also a `Link: <…>; rel="next"` header) is the next page with '
            "the same filters; it is null on the last page. `created_after` is inclusive, "
            "`created_before` exclusive."
        ),
        responses=problem_responses(*GUARDED),
    )
    def list_jobs(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        kind: str | None = Parameter(
            default=None, schema_extra=_optional(enum=list(job_query.KINDS))
        ),
        resource: str | None = Parameter(
            default=None, schema_extra=_optional(enum=list(RESOURCE_NAMES))
        ),
        status: str | None = Parameter(
            default=None, schema_extra=_optional(enum=list(job_query.STATUSES))
        ),
        created_after: str | None = Parameter(
            default=None,
            schema_extra=_optional(format="date-time"),
            description="created at or after",
        ),
        created_before: str | None = Parameter(
            default=None, schema_extra=_optional(format="date-time"), description="created before"
        ),
        owner: str | None = Parameter(
            default=None,
            description="Admin tokens: only this owner's jobs.",
            schema_extra=_optional(pattern=job_query.OWNER_PATTERN),
        ),
        cursor: str | None = Parameter(
            default=None,
            description="Where the previous page ended (its `next_cursor`); opaque.",
            schema_extra=_optional(pattern=job_query.CURSOR_PATTERN),
        ),
        limit: str | None = Parameter(
            default=None,
            description="Jobs per page.",
            schema_extra=_optional(
                type=OpenAPIType.INTEGER,
                minimum=1,
                maximum=job_query.LIMIT_MAX,
                default=job_query.LIMIT_DEFAULT,
            ),
        ),
    ) -> Response[JobList]:
        job_query.only_known(request.query_params, (*LIST_PARAMS, "cursor", "limit"))
        query = {name: request.query_params.get(name) for name in LIST_PARAMS}
        flt = job_query.job_filter(principal_of(request), tuple(app.catalog), query)
        size = job_query.limit(limit)
        after = job_query.decode_cursor(cursor) if cursor is not None else None
        found, last = app.sync(job_list.page, flt, after, size)
        next_cursor = job_query.encode_cursor(last) if last else None
        link = (
            job_query.next_link(app.settings.public_url, query, next_cursor, size)
            if next_cursor
            else None
        )
        body = JobList(jobs=[_list_item(app, j) for j in found], next_cursor=next_cursor, next=link)
        return Response(body, headers={"Link": f'<{link}>; rel="next"'} if link else None)

    @get(
        "/{job_id:str}",
        sync_to_thread=True,
        summary="Status of any job (import or export)",
        responses=problem_responses(*GUARDED, 404),
    )
    def status(self, request: Request[Any, Any, Any], app: AppState, job_id: str) -> JobView:
        principal = principal_of(request)
        view = load_job_view(app, job_id, None, principal.owner_filter())
        require_kind_scope(principal, view.kind, "read")
        return view

    @post(
        "/{job_id:str}/cancel",
        sync_to_thread=True,
        status_code=202,
        summary="Cancel a job: queued jobs stop at once, running ones at the next batch",
        responses=problem_responses(*GUARDED, 404, 409),
    )
    def cancel(self, request: Request[Any, Any, Any], app: AppState, job_id: str) -> JobView:
        principal = principal_of(request)
        job = app.sync(jobs.get, job_id, principal.owner_filter())
        if job is None:
            raise Problem(404, f"no job {job_id}")
        require_kind_scope(principal, job.kind, "write")
        if job.terminal:
            raise Problem(409, f"job {job_id} is already {job.status}")
        updated = app.sync(jobs.request_cancel, job.id)
        assert updated is not None
        return job_view(
            updated, base_url=app.settings.public_url, events_url=events_url(app, updated)
        )
