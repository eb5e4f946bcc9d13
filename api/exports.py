"""``/v1/exports``: stream a table straight into the response, or start an export job."""

from __future__ import annotations

import json
import logging
from itertools import chain
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.response import Stream

from api.auth import authorize, idempotency_key, principal_of
from api.idempotency import IdempotentCreate, accepted
from api.limits import JSON_BODY_BYTES
from api.openapi import COMPRESSED_MEDIA, EXPORT_MEDIA, NO_COMPRESSION, files, operation
from api.problems import GUARDED, Problem, problem_responses
from api.schemas import ExportRequest, JobView
from api.state import AppState
from api.streaming import STREAM_CONNECTION, ClosingStream, GuardedStream
from api.views import load_job_view
from engine import db, jobs, metrics
from engine.exports.query import (
    COMPRESSIONS,
    FORMATS,
    Encoded,
    ExportQuery,
    ExportRequestError,
    ExportSpec,
    export_batches,
    prepare,
)
from engine.formats import COMPRESSED_MEDIA_TYPES
from engine.prefetch import prefetch
from engine.resources import RESOURCE_NAMES

log = logging.getLogger("bulkio.api")

#: Query parameters of ``GET /v1/exports`` that are not filters.
OPTIONS = ("resource", "format", "fields", "compression", "formula_guard")


class ExportJobRequest(ExportRequest, forbid_unknown_fields=True):
    #: Neutralise spreadsheet formulas in CSV cells; default ``BULKIO_CSV_FORMULA_GUARD``.
    formula_guard: bool | None = None


def content_encoding(header: str | None) -> str | None:
    """The ``Content-Encoding`` to answer an ``Accept-Encoding`` with: zstd or gzip, whichever
    has the higher q-value (zstd on a tie: smaller and faster), None if neither is accepted."""
    ranked: list[tuple[float, bool, str]] = []
    for item in (header or "").split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        q = params.strip().removeprefix("q=").strip()
        if name in COMPRESSIONS and (not q or q.replace(".", "", 1).isdigit()):
            weight = float(q) if q else 1.0
            if weight > 0:
                ranked.append((weight, name == "zstd", name))
    return max(ranked)[2] if ranked else None


def media_type(spec: ExportSpec) -> str:
    if spec.compression:
        return COMPRESSED_MEDIA_TYPES[spec.compression]
    return spec.writer().content_type.split(";")[0]  # litestar adds "; charset=utf-8" to text/*


def _prepare(
    app: AppState,
    resource: str | None,
    fmt: str | None,
    fields: list[str] | None,
    filters: dict[str, Any] | None,
    compression: str | None,
    formula_guard: bool | None,
) -> tuple[ExportSpec, ExportQuery]:
    guard = app.settings.csv_formula_guard if formula_guard is None else formula_guard
    for name, value in (filters or {}).items():
        # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the query (500).
        if any(
            isinstance(v, str) and "\x00" in v
            for v in (value if isinstance(value, list) else [value])
        ):
            raise Problem(400, f"filter {name!r}: NUL characters are not allowed")
    try:
        return prepare(app.catalog, resource, fmt, fields, filters, compression, guard)
    except ExportRequestError as exc:
        raise Problem(400, str(exc)) from exc


class ExportController(Controller):
    path = "/v1/exports"
    tags = ["exports"]
    guards = [authorize]

    @get(
        "/",
        sync_to_thread=True,
        summary="Stream a table export",
        description=(
            "Rows of `resource` in `format`, read in Arrow batches from one snapshot and encoded "
            "batch by batch into the response (constant memory, backpressure). Every other query "
            "parameter is a filter declared for the resource (e.g. `role=admin`, "
            "`created_after=2024-01-01T00:00:00Z`, `ids=a,b`). `compression=gzip` makes the body a "
            ".gz file (`application/gzip`), `compression=zstd` a .zst file (`application/zstd`); "
            "otherwise `Accept-Encoding: zstd` or `gzip` gives that `Content-Encoding` (zstd "
            "when both are accepted with the same q-value; Parquet is never re-compressed)."
        ),
        opt={"scope": "exports:read"},
        responses=problem_responses(*GUARDED),
        operation_class=operation(
            content={200: files([*EXPORT_MEDIA.values(), *COMPRESSED_MEDIA])}
        ),
    )
    def stream(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        resource: str = Parameter(schema_extra={"enum": list(RESOURCE_NAMES)}),
        fmt: str = Parameter(
            query="format", default="ndjson", schema_extra={"enum": list(FORMATS)}
        ),
        # Its values depend on `resource`, which OpenAPI cannot express: see the description.
        fields: str | None = Parameter(default=None, include_in_schema=False),
        compression: str | None = Parameter(
            default=None,
            description="gzip: the body is a .gz file; zstd: a .zst file",
            schema_extra={"enum": [*COMPRESSIONS, *NO_COMPRESSION]},
        ),
        formula_guard: bool | None = Parameter(
            default=None,
            description="CSV: prefix cells starting with = + - @ tab CR with ' "
            "(default BULKIO_CSV_FORMULA_GUARD, true)",
        ),
    ) -> Stream:
        filters: dict[str, Any] = {}
        for name in request.query_params:
            if name not in OPTIONS:
                values = request.query_params.getall(name)
                filters[name] = values[0] if len(values) == 1 else ",".join(values)
        names = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
        spec, query = _prepare(app, resource, fmt, names, filters, compression, formula_guard)
        encode = (
            content_encoding(request.headers.get("accept-encoding"))
            if spec.compression is None and spec.format != "parquet"
            else None
        )
        slot = app.slots.take_stream(principal_of(request))
        try:
            conn = db.connect_bulk(app.settings.database_url, name=STREAM_CONNECTION)
        except BaseException:
            app.slots.release(slot)
            raise
        # Reading batch N+1 (ADBC) overlaps encoding batch N: ~25% faster, one batch more memory.
        encoded = Encoded(
            prefetch(export_batches(conn, query)),
            spec.writer(),
            compression=encode or spec.compression,
        )

        def release() -> None:
            try:
                encoded.close()
                conn.close()
                metrics.rows_exported(spec.resource, spec.format, encoded.rows)
            finally:
                app.slots.release(slot)

        body = ClosingStream(iter(encoded), release)
        first = next(body)  # runs the query: its errors are still a problem+json answer
        headers = {
            "Content-Disposition": f'attachment; filename="{spec.file_name}"',
            "Vary": "Accept-Encoding",
        }
        if encode:
            headers["Content-Encoding"] = encode
        return GuardedStream(
            chain([first], body),
            closing=body,
            stall_seconds=app.settings.stream_stall_seconds,
            media_type=media_type(spec),
            headers=headers,
        )

    @post(
        "/",
        sync_to_thread=True,
        status_code=202,
        summary="Start an export job",
        description=(
            "`{resource, format, fields?, filters?, compression?, formula_guard?}` → 202 with the "
            "job. A worker writes the file to object storage; `GET /v1/exports/{id}` then gives a "
            "short-lived `download_url`. `Idempotency-Key` makes retries safe."
        ),
        opt={"scope": "exports:write"},
        responses=problem_responses(*GUARDED, 409, 413, 422),
        request_max_body_size=JSON_BODY_BYTES,
    )
    def create(
        self, request: Request[Any, Any, Any], app: AppState, data: ExportJobRequest
    ) -> Response[JobView]:
        principal = principal_of(request)
        owner = principal.owner
        spec, _ = _prepare(
            app,
            data.resource,
            data.format,
            data.fields,
            data.filters,
            data.compression,
            data.formula_guard,
        )
        digest = jobs.request_hash("export", json.dumps(spec.options(), sort_keys=True))
        idem = IdempotentCreate(app, owner, idempotency_key(request))
        if idem.reserve():
            return idem.replay(digest)
        try:
            job = app.slots.create_job(
                principal,
                None,
                job_id=jobs.new_job_id(),
                kind="export",
                resource=spec.resource,
                fmt=spec.format,
                mode=None,
                owner=owner,
                options=spec.options(),
                file_name=spec.file_name,
            )
            idem.created(job, digest)
        except BaseException:
            idem.abandon()
            raise
        return accepted(app, job, f"/v1/exports/{job.id}", keyed=idem.key is not None)

    @get(
        "/{job_id:str}",
        sync_to_thread=True,
        summary="Status of an export job; when done, a fresh short-lived download_url",
        opt={"scope": "exports:read"},
        responses=problem_responses(*GUARDED, 404),
    )
    def status(self, request: Request[Any, Any, Any], app: AppState, job_id: str) -> JobView:
        owner = principal_of(request).owner_filter()
        return load_job_view(app, job_id, "export", owner)
