"""Errors as ``application/problem+json`` (RFC 9457); never a 500 for bad input."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from engine.errors import (
    FileError,
    IdempotencyConflict,
    IdempotencyInProgress,
)

log = logging.getLogger("bulkio.api")

PROBLEM = "application/problem+json"


class ProblemDetails(msgspec.Struct):
    """An error body (RFC 9457). Extension members may follow: ``errors`` (the invalid
    parameters of a 400) and whatever a problem adds."""

    type: str
    title: str
    status: int
    detail: str


class Problem(HTTPException):
    """Raised by handlers with a status, a title and a precise detail."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail=detail, status_code=status, headers=headers)
        self.title = title
        self.fields = extra


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[dict[str, Any]]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


#: What each documented error status means, across routes.
_MEANINGS = {
    400: "The request is malformed or names an unknown value; `detail` says which.",
    401: "No API token, or an unknown or revoked one.",
    403: "The token lacks the scope this route needs.",
    404: "No such job for this token.",
    409: "The job is finished, or an Idempotency-Key request is still in progress.",
    413: "The request body is too large for this route: an upload past "
    "BULKIO_MAX_UPLOAD_BYTES, the JSON of POST /v1/exports past 1 MiB, any other past 64 KiB.",
    422: "The Idempotency-Key was used before with a different request.",
    429: "A per-token limit is reached (`limit`: requests_per_minute, running_jobs, "
    "concurrent_uploads or concurrent_streams); see Retry-After.",
}
#: Answered by the guard of every /v1 route except downloads.
GUARDED = (400, 401, 403, 413, 429)


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for ``statuses``, each an ``application/problem+json`` body."""
    return {
        status: ResponseSpec(
            data_container=ProblemDetails,
            media_type=PROBLEM,
            description=_MEANINGS[status],
            generate_examples=False,
        )
        for status in statuses
    }


def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    extra: dict[str, Any] = {}
    if isinstance(exc, Problem):
        extra = dict(exc.fields)
        title = exc.title or _TITLES.get(status, "Error")
    else:
        title = _TITLES.get(status, "Error")
        if status == 413:
            return problem(status, title, _too_large(request), headers=exc.headers)
    if isinstance(exc, ValidationException) and exc.extra is not None:
        extra["errors"] = exc.extra
    return problem(status, title, str(exc.detail), headers=exc.headers, **extra)


def _too_large(request: Request[Any, Any, Any]) -> str:
    """Litestar's own 413 (a route's ``request_max_body_size``), said precisely."""
    limit = request.route_handler.resolve_request_max_body_size()
    return f"the request body is larger than this route accepts ({limit} bytes)"


def on_idempotency(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, IdempotencyInProgress):
        return problem(409, "Conflict", str(exc), headers={"Retry-After": "1"})
    return problem(422, "Unprocessable Content", str(exc))


def on_file_error(request: Request[Any, Any, Any], exc: FileError) -> Response[dict[str, Any]]:
    return problem(400, "Bad Request", str(exc))


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "Internal Server Error",
        "the server failed to handle this request; it has been logged",
    )


HANDLERS: dict[Any, Any] = {
    HTTPException: on_http,
    IdempotencyConflict: on_idempotency,
    IdempotencyInProgress: on_idempotency,
    FileError: on_file_error,
    Exception: on_unexpected,
}
