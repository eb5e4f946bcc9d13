"""``/v1/imports/{id}/errors/page`` and ``/summary``: an import's error rows a page at a time,
filtered by field and code, and their counts by field and code (what a table with filters shows;
the whole report streams from ``/v1/imports/{id}/errors``).

Pages are keyset-paged in the report's order, ``(row, field, code)`` (a record-level error has
no field and comes first in its row): ``next`` repeats the filters with ``after_row``,
``after_field`` and ``after_code`` set to the last row of the page. Every value of those names a
valid place, so a page can be asked for from anywhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi.spec import OpenAPIType
from litestar.params import Parameter

from api.auth import authorize, principal_of
from api.job_query import only_known
from api.problems import GUARDED, Problem, problem_responses
from api.schemas import ErrorRow
from api.state import AppState
from engine import jobs

#: Error rows per page: default and most.
LIMIT_DEFAULT, LIMIT_MAX = 50, 500
#: Longest ``field``, ``code``, ``after_field`` or ``after_code`` (names, not data).
MAX_NAME = 200
#: Most (field, code) pairs a summary lists.
MAX_PAIRS = 1000
#: Largest ``after_row`` (``job_errors.row_no`` is a bigint).
MAX_ROW = 2**63 - 1
_NAME = r"^[^\x00]*$"
PARAMS = ("field", "code", "after_row", "after_field", "after_code", "limit")


class ErrorPage(msgspec.Struct):
    """Error rows in report order; ``next`` is the next page with the same filters (null: the
    last page)."""

    errors: list[ErrorRow]
    next: str | None


class ErrorCount(msgspec.Struct):
    #: null: errors of a whole record (``malformed_record``).
    field: str | None
    code: str
    count: int


class ErrorSummary(msgspec.Struct):
    """Stored error rows counted by (field, code), most frequent first."""

    counts: list[ErrorCount]
    stored_errors: int
    error_count: int
    errors_truncated: bool


def _string(**schema: Any) -> dict[str, Any]:
    """``schema_extra`` of an optional string query parameter (not ``oneOf: [string, null]``)."""
    return {"one_of": None, "type": OpenAPIType.STRING, **schema}


def _name(param: str, value: str | None) -> str | None:
    if value is None:
        return None
    if "\x00" in value or len(value) > MAX_NAME:
        raise Problem(400, f"{param} must be at most {MAX_NAME} characters, without NUL")
    return value


def _whole(param: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and low <= int(text) <= high):
        raise Problem(400, f"{param} must be a whole number from {low} to {high}; got {raw!r}")
    return int(text)


def _import_job(app: AppState, request: Request[Any, Any, Any], job_id: str) -> jobs.Job:
    job = app.sync(jobs.get, job_id, principal_of(request).owner_filter(), "import")
    if job is None:
        raise Problem(404, f"no import job {job_id}")
    return job


class ErrorPageController(Controller):
    path = "/v1/imports/{job_id:str}/errors"
    tags = ["imports"]
    guards = [authorize]

    @get(
        "/page",
        sync_to_thread=True,
        summary="A page of an import job's error rows, filtered by field and code",
        description=(
            "Error rows `{row, line, field, code, message, value}` in the order of the report "
            "(row, then field, then code), at most `limit`, only those of `field` and `code` when "
            "given. `next` is the next page with the same filters, null on the last one; it "
            'starts after `after_row`, `after_field` (`""`: a record-level error) and '
            "`after_code`. The whole report: `GET /v1/imports/{job_id}/errors`."
        ),
        opt={"scope": "imports:read"},
        responses=problem_responses(*GUARDED, 404),
    )
    def page(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        job_id: str,
        field: str | None = Parameter(
            default=None,
            description="Only errors of this field (e.g. `email`).",
            schema_extra=_string(pattern=_NAME, maxLength=MAX_NAME),
        ),
        code: str | None = Parameter(
            default=None,
            description="Only errors with this code (e.g. `invalid_format`).",
            schema_extra=_string(pattern=_NAME, maxLength=MAX_NAME),
        ),
        after_row: str | None = Parameter(
            default=None,
            description="Start after this row (with `after_field` and `after_code`): the "
            "last row of the previous page, as `next` sets it.",
            schema_extra=_string(type=OpenAPIType.INTEGER, minimum=0, maximum=MAX_ROW),
        ),
        after_field: str | None = Parameter(
            default=None,
            description="With `after_row`: the field of the previous page's last row "
            '(`""` for none). Default `""`.',
            schema_extra=_string(pattern=_NAME, maxLength=MAX_NAME),
        ),
        after_code: str | None = Parameter(
            default=None,
            description="With `after_row`: the code of the previous page's last row "
            '(default `""`).',
            schema_extra=_string(pattern=_NAME, maxLength=MAX_NAME),
        ),
        limit: str | None = Parameter(
            default=None,
            description="Error rows per page.",
            schema_extra=_string(
                type=OpenAPIType.INTEGER, minimum=1, maximum=LIMIT_MAX, default=LIMIT_DEFAULT
            ),
        ),
    ) -> ErrorPage:
        only_known(request.query_params, PARAMS)
        field, code = _name("field", field), _name("code", code)
        size = _whole("limit", limit, LIMIT_DEFAULT, 1, LIMIT_MAX)
        after = None
        if after_row is not None and after_row.strip() != "":
            after = (
                _whole("after_row", after_row, 0, 0, MAX_ROW),
                _name("after_field", after_field) or "",
                _name("after_code", after_code) or "",
            )
        job = _import_job(app, request, job_id)
        rows = app.sync(
            jobs.error_page, job.id, limit=size + 1, after=after, field=field, code=code
        )
        link = None
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            query = {"field": field, "code": code, "limit": str(size)}
            query.update(
                after_row=str(last["row"]),
                after_field=last["field"] or "",
                after_code=last["code"],
            )
            kept = {k: v for k, v in query.items() if v is not None}
            link = f"{app.settings.public_url}/v1/imports/{job.id}/errors/page?{urlencode(kept)}"
        return ErrorPage(errors=[ErrorRow(**r) for r in rows], next=link)

    @get(
        "/summary",
        sync_to_thread=True,
        summary="An import job's error rows counted by field and code",
        description=(
            "How many stored error rows each (field, code) pair has, most frequent first "
            f"(at most {MAX_PAIRS} pairs): the choices of the filters of "
            "`GET /v1/imports/{job_id}/errors/page`. `errors_truncated`: the job counted more "
            "error rows (`error_count`) than it stored (`stored_errors`, BULKIO_MAX_ERROR_ROWS)."
        ),
        opt={"scope": "imports:read"},
        responses=problem_responses(*GUARDED, 404),
    )
    def summary(
        self, request: Request[Any, Any, Any], app: AppState, job_id: str
    ) -> Response[ErrorSummary]:
        job = _import_job(app, request, job_id)
        pairs = app.sync(jobs.error_counts, job.id, MAX_PAIRS)
        body = ErrorSummary(
            counts=[ErrorCount(field=f, code=c, count=n) for f, c, n in pairs],
            stored_errors=int(job.stored_errors),
            error_count=int(job.error_count),
            errors_truncated=job.errors_truncated,
        )
        return Response(body, headers={"Cache-Control": "no-store"})
