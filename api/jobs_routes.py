"""``/v1/jobs``: any job by id, and cancellation."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State

from api.auth import authorize, principal_of, require_kind_scope
from api.imports import _job_view
from api.problems import GUARDED, Problem, problem_responses
from api.schemas import JobView
from api.state import AppState
from api.views import job_view
from engine import jobs


class JobController(Controller):
    path = "/v1/jobs"
    tags = ["jobs"]
    guards = [authorize]

    @get(
        "/{job_id:str}",
        sync_to_thread=True,
        summary="Status of any job (import or export)",
        responses=problem_responses(*GUARDED, 404),
    )
    def status(self, request: Request[Any, Any, Any], state: State, job_id: str) -> JobView:
        principal = principal_of(request)
        view = _job_view(state.app, job_id, None, principal.owner_filter())
        require_kind_scope(principal, view.kind, "read")
        return view

    @post(
        "/{job_id:str}/cancel",
        sync_to_thread=True,
        status_code=202,
        summary="Cancel a job: queued jobs stop at once, running ones at the next batch",
        responses=problem_responses(*GUARDED, 404, 409),
    )
    def cancel(self, request: Request[Any, Any, Any], state: State, job_id: str) -> JobView:
        app: AppState = state.app
        principal = principal_of(request)
        job = app.sync(jobs.get, job_id, principal.owner_filter())
        if job is None:
            raise Problem(404, f"no job {job_id}")
        require_kind_scope(principal, job.kind, "write")
        if job.terminal:
            raise Problem(409, f"job {job_id} is already {job.status}")
        updated = app.sync(jobs.request_cancel, job.id)
        assert updated is not None
        return job_view(updated, base_url=app.settings.public_url)
