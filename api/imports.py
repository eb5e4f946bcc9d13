"""``/v1/imports``: upload (streamed to object storage), status, the error report and the
rejected records."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Generator
from functools import partial
from itertools import chain
from typing import Any

import anyio.to_thread
import msgspec
import polars as pl
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.response import Stream

from api.auth import authorize, idempotency_key, principal_of
from api.idempotency import IdempotentCreate, accepted
from api.multipart import MultipartError, StreamingForm, boundary_of
from api.openapi import files, import_body, operation
from api.problems import GUARDED, Problem, problem_responses
from api.schemas import JobView
from api.state import AppState
from api.streaming import STREAM_CONNECTION, ClosingStream, GuardedStream
from api.uploads import import_job, upload_source
from api.views import load_job_view
from engine import db, jobs, netguard, source_url
from engine.auth import Principal
from engine.errors import FileError, UnsupportedFormat
from engine.exports.writers import writer_for
from engine.formats import FORMATS, MEDIA_TYPES, PARQUET_MAGIC, detect_format
from engine.formats.mapping import (
    MAX_MAPPING_BYTES,
    MappingError,
    canonical,
    parse_header_case,
    parse_mapping,
)
from engine.reports import error_batches, rejected_file, rejected_format
from engine.resources import IMPORT_MODES, RESOURCE_NAMES

MODES = IMPORT_MODES
#: How the file's columns become fields (engine.formats.mapping): a form field, a query parameter
#: or a member of a JSON request.
MAPPING_FIELDS = ("mapping", "header_case")
#: Largest accepted non-file form field (resource, format, mode).
MAX_FIELD_BYTES = 1024
REPORT_FORMATS = ("ndjson", "json", "csv")
REPORT_COLUMNS = ["row", "line", "field", "code", "message", "value"]
#: Largest ``max_errors`` (a job's ``failed`` counter is a PostgreSQL bigint).
MAX_ERRORS_LIMIT = 2**63 - 1
#: Members of a JSON import request, and its largest body.
JSON_FIELDS = ("upload_id", "source_url", "resource", "format", "mode", "max_errors")
JSON_REQUEST_BYTES = 64 * 1024
#: ``code`` of the record that ends an error report holding only the first error rows.
TRUNCATED = "errors_truncated"


class _Upload:
    """Counts and hashes bytes on their way to storage; enforces the upload cap; keeps the
    first bytes (a Parquet file without a telling name is known by them)."""

    def __init__(self, limit: int) -> None:
        self.size = 0
        self.limit = limit
        self.sha = hashlib.sha256()
        self.head = b""

    async def tap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.size += len(chunk)
            if self.size > self.limit:
                raise Problem(
                    413, f"the upload is larger than {self.limit} bytes (BULKIO_MAX_UPLOAD_BYTES)"
                )
            self.sha.update(chunk)
            if len(self.head) < len(PARQUET_MAGIC):
                self.head += chunk[: len(PARQUET_MAGIC) - len(self.head)]
            yield chunk

    async def drain(self, chunks: AsyncIterator[bytes]) -> None:
        async for _ in self.tap(chunks):
            pass


def clean_file_name(name: str | None) -> str | None:
    """A client's file name, kept only as a label: control characters dropped, length capped.
    It is never used as a path (objects are stored under the job's id)."""
    if name is None:
        return None
    cleaned = "".join(ch for ch in name if ch.isprintable())[:255]
    return cleaned or None


async def _json_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The members of a JSON import request (an upload session's import), as form fields."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > JSON_REQUEST_BYTES:
            raise Problem(413, f"a JSON import request is at most {JSON_REQUEST_BYTES} bytes")
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Problem(400, f"the JSON body is malformed: {exc}") from exc
    if not isinstance(data, dict):
        raise Problem(400, "the JSON body must be an object")
    known = (*JSON_FIELDS, *MAPPING_FIELDS)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise Problem(
            400,
            f"unknown members {', '.join(map(repr, unknown))} (known: {', '.join(known)})",
        )
    fields = {}
    for name, value in data.items():
        if value is None:
            continue
        if name == "mapping":
            if not isinstance(value, dict):
                raise Problem(400, "'mapping' must be a JSON object of file column → field")
            fields[name] = msgspec.json.encode(value).decode()
            continue
        if isinstance(value, float) and value.is_integer():  # JSON Schema: 5.0 is an integer
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise Problem(
                400,
                f"{name!r} must be a string"
                + (" or a whole number" if name == "max_errors" else ""),
            )
        fields[name] = str(value).strip()
    if not fields.get("upload_id") and not fields.get("source_url"):
        raise Problem(
            400,
            "a JSON import request names its 'upload_id' (POST /v1/uploads) or a 'source_url'; "
            "send a file as multipart/form-data, or as a raw body with ?resource=...",
        )
    return fields


async def _small(chunks: AsyncIterator[bytes], name: str, limit: int = MAX_FIELD_BYTES) -> str:
    data = b""
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise Problem(400, f"form field {name!r} is too long")
    return data.decode("utf-8", "replace").strip()


async def _mapping_field(chunks: AsyncIterator[bytes], name: str) -> str:
    """A form field of the mapping options (``mapping`` may be longer than other fields)."""
    data = b""
    async for chunk in chunks:
        data += chunk
        if len(data) > MAX_MAPPING_BYTES:
            raise Problem(400, f"form field {name!r} is longer than {MAX_MAPPING_BYTES} bytes")
    return data.decode("utf-8", "replace").strip()


def _mapping_options(app: AppState, fields: dict[str, str], resource: str) -> dict[str, Any]:
    """The job's options for ``mapping`` and ``header_case`` (only those given), checked now:
    400 naming the bad entry."""
    try:
        header_case = parse_header_case(fields.get("header_case"))
        columns = app.catalog[resource].column_names
        mapping = parse_mapping(fields.get("mapping"), columns, header_case)
    except MappingError as exc:
        raise Problem(400, str(exc)) from None
    options: dict[str, Any] = {}
    if mapping:
        options["mapping"] = mapping
    if header_case != "exact":
        options["header_case"] = header_case
    return options


def _mapping_hash(options: dict[str, Any]) -> list[str]:
    """The mapping options' part of the idempotency hash (none when not given)."""
    parts = [f"mapping={canonical(options['mapping'])}"] if "mapping" in options else []
    return parts + ([f"header_case={options['header_case']}"] if "header_case" in options else [])


class ImportController(Controller):
    path = "/v1/imports"
    tags = ["imports"]
    guards = [authorize]

    @post(
        "/",
        status_code=202,
        summary="Upload a file and start an import job",
        description=(
            "multipart/form-data with fields `file`, `resource` (users|articles|comments), "
            "optional "
            "`format` (csv|ndjson|json|parquet; default from the file name, `.gz` and `.zst` "
            "looked through, else `parquet` for a file starting with `PAR1`), "
            "`mode` (upsert|insert|merge|validate_only), `max_errors`, `mapping` and "
            "`header_case`. A raw body is accepted too, "
            "with `resource`, `format`, `mode`, `max_errors` and `filename` as query parameters "
            "(not listed below: OpenAPI "
            "cannot make them required for one body type only). The file streams to object "
            "storage; the answer is the job (202). `Idempotency-Key` (1-200 characters) makes "
            "retries safe: a replay answers the same job, the key with another request 422. "
            "From a URL: a JSON body `{resource, source_url, ...}` (or `source_url` as a form "
            "field or query parameter, without a file); the job is created at once, and a "
            "worker fetches the file into storage before importing it."
        ),
        opt={"scope": "imports:write"},
        responses=problem_responses(*GUARDED, 404, 409, 413, 422),  # 404: no such upload_id
        request_max_body_size=None,  # streamed, with its own cap (BULKIO_MAX_UPLOAD_BYTES)
        operation_class=operation(
            request_body=import_body(RESOURCE_NAMES, (*FORMATS, "jsonl"), MODES)
        ),
    )
    async def create(self, request: Request[Any, Any, Any], app: AppState) -> Response[JobView]:
        principal = principal_of(request)
        # Taken before a byte is read; counts against the token's job limit until it becomes
        # the job (atomically) or is released.
        async with app.slots.upload(principal) as slot:
            return await self._receive(app, request, principal, slot)

    async def _receive(
        self, app: AppState, request: Request[Any, Any, Any], principal: Principal, slot: str
    ) -> Response[JobView]:
        owner = principal.owner
        idem = IdempotentCreate(app, owner, idempotency_key(request))
        replaying = await anyio.to_thread.run_sync(idem.reserve)
        job_id = jobs.new_job_id()
        object_key = f"imports/{job_id}/source"
        upload = _Upload(app.settings.max_upload_bytes)
        fields = {
            k: v
            for k, v in request.query_params.items()
            if k in ("resource", "format", "mode", "max_errors", "filename", "source_url")
        }
        fields.update((k, v) for k, v in request.query_params.items() if k in MAPPING_FIELDS)
        file_name = clean_file_name(fields.pop("filename", None))
        got_file = False
        stored = False
        try:
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                try:
                    form = StreamingForm(request.stream(), boundary_of(content_type))
                    async for part, data in form.parts():
                        if part.name == "file" and not got_file:
                            got_file = True
                            file_name = clean_file_name(part.filename) or file_name
                            if not replaying:
                                await app.storage.put_stream(object_key, upload.tap(data))
                                stored = True
                            else:
                                await upload.drain(data)
                        elif part.name in ("resource", "format", "mode", "max_errors", "upload_id"):
                            fields[part.name] = await _small(data, part.name)
                        elif part.name in MAPPING_FIELDS:
                            fields[part.name] = await _mapping_field(data, part.name)
                        elif part.name == "source_url":
                            fields[part.name] = await _small(
                                data, part.name, source_url.MAX_URL_CHARS
                            )
                except MultipartError as exc:
                    raise Problem(400, str(exc)) from exc
            elif content_type.startswith("application/json") and "resource" not in fields:
                # A JSON request names an upload session; a raw JSON *file* comes with
                # ?resource=... as every raw body does.
                fields.update(await _json_fields(request))
            elif "source_url" in fields:  # ?source_url=...: the file is fetched, not sent
                await upload.drain(request.stream())
                got_file = upload.size > 0
            else:
                got_file = True
                if not replaying:
                    await app.storage.put_stream(object_key, upload.tap(request.stream()))
                    stored = True
                else:
                    await upload.drain(request.stream())
            source, size, sha = None, upload.size, upload.sha.hexdigest()
            if "upload_id" in fields:  # an upload session's bytes, already stored
                if got_file:
                    raise Problem(400, "send either a file or an upload_id, not both")
                source = await anyio.to_thread.run_sync(
                    upload_source, app, fields["upload_id"], owner
                )
                file_name, got_file, size = source.file_name, True, int(source.size)
                sha = f"upload={source.id}:{source.received_sha256}"
            url = fields.get("source_url")
            if url is not None:  # fetched by a worker (engine/imports/fetch.py)
                if got_file or "upload_id" in fields:
                    raise Problem(400, "send one of a file, an upload_id or a source_url")
                file_name = source_url.file_name(url)
            resource, fmt, mode = self._check(
                app, fields, file_name, got_file, size, from_url=url is not None, head=upload.head
            )
            max_errors = _max_errors(fields.get("max_errors"))
            options = _mapping_options(app, fields, resource)
            if url is not None:  # last: it may wait for DNS
                if not replaying:  # a replay creates nothing: no need to look again
                    url = await _checked_source_url(app, url)
                sha = f"url={url.strip()}"
            cap = [] if max_errors is None else [f"max_errors={max_errors}"]
            digest = jobs.request_hash(resource, fmt, mode, sha, *cap, *_mapping_hash(options))
            if replaying:
                return await anyio.to_thread.run_sync(idem.replay, digest)
            job_fields: dict[str, Any] = {
                "job_id": job_id,
                "kind": "import",
                "resource": resource,
                "fmt": fmt,
                "mode": mode,
                "owner": owner,
                "options": ({} if max_errors is None else {"max_errors": max_errors}) | options,
            }
            if url is not None:
                job_fields["options"] = {**(job_fields["options"] or {}), "source_url": url}
            if source is None:
                create = partial(
                    app.slots.create_job,
                    principal,
                    slot,
                    file_name=file_name,
                    object_key=object_key,
                    total_bytes=None if url is not None else upload.size,
                    **job_fields,
                )
            else:  # the upload becomes the job's source, once
                create = partial(import_job, app, principal, slot, source.id, **job_fields)
            job = await anyio.to_thread.run_sync(create)
            await anyio.to_thread.run_sync(idem.created, job, digest)
        except BaseException:
            if stored:
                app.storage.delete(object_key)
            await anyio.to_thread.run_sync(idem.abandon)
            raise
        return accepted(app, job, f"/v1/imports/{job.id}", keyed=idem.key is not None)

    @staticmethod
    def _check(
        app: AppState,
        fields: dict[str, str],
        file_name: str | None,
        got_file: bool,
        size: int,
        *,
        from_url: bool = False,
        head: bytes = b"",
    ) -> tuple[str, str, str]:
        if not got_file and not from_url:
            raise Problem(400, "the multipart form has no 'file' field")
        resource = fields.get("resource", "")
        if resource not in app.catalog:
            raise Problem(
                400,
                f"resource must be one of {', '.join(app.catalog)}; got {resource!r}"
                if resource
                else f"the 'resource' field is required ({', '.join(app.catalog)})",
            )
        mode = fields.get("mode") or "upsert"
        if mode not in MODES:
            raise Problem(400, f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        try:
            fmt = detect_format(file_name, fields.get("format") or None, head)
        except UnsupportedFormat as exc:
            if not from_url or fields.get("format"):
                raise Problem(400, str(exc)) from exc
            fmt = source_url.PENDING_FORMAT  # the worker asks the answer's Content-Type
        if size == 0 and not from_url:
            raise Problem(400, "the uploaded file is empty")
        return resource, fmt, mode

    @get(
        "/{job_id:str}",
        sync_to_thread=True,
        summary="Status of an import job",
        opt={"scope": "imports:read"},
        responses=problem_responses(*GUARDED, 404),
    )
    def status(self, request: Request[Any, Any, Any], app: AppState, job_id: str) -> JobView:
        owner = principal_of(request).owner_filter()
        return load_job_view(app, job_id, "import", owner)

    @get(
        "/{job_id:str}/errors",
        sync_to_thread=True,
        summary="The complete error report of an import job, streamed",
        description=(
            "One entry per error: {row, line, field, code, message, value}, by row. When the job "
            "stored only its first error rows (BULKIO_MAX_ERROR_ROWS), a last entry with code "
            f"`{TRUNCATED}` (row, line, field and value null) says so, and the header "
            "`Bulkio-Errors-Truncated` is `true` (else `false`)."
        ),
        opt={"scope": "imports:read"},
        responses=problem_responses(*GUARDED, 404),
        operation_class=operation(content={200: files([MEDIA_TYPES[f] for f in REPORT_FORMATS])}),
    )
    def errors(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        job_id: str,
        report_format: str = Parameter(
            query="format", default="ndjson", schema_extra={"enum": list(REPORT_FORMATS)}
        ),
    ) -> Stream:
        if report_format not in REPORT_FORMATS:
            raise Problem(400, f"format must be one of {', '.join(REPORT_FORMATS)}")
        job = app.sync(jobs.get, job_id, principal_of(request).owner_filter(), "import")
        if job is None:
            raise Problem(404, f"no import job {job_id}")
        writer = writer_for(
            report_format, REPORT_COLUMNS, formula_guard=app.settings.csv_formula_guard
        )
        slot = app.slots.take_stream(principal_of(request))
        report = _report(app, job.id, writer)

        def release() -> None:
            try:
                report.close()
            finally:
                app.slots.release(slot)

        body = ClosingStream(report, release)
        return GuardedStream(
            body,
            closing=body,
            stall_seconds=app.settings.stream_stall_seconds,
            media_type=writer.content_type,
            headers={
                "Content-Disposition": f'attachment; filename="errors-{job.id}.{writer.extension}"',
                "Bulkio-Errors-Truncated": "true" if job.errors_truncated else "false",
            },
        )

    @get(
        "/{job_id:str}/rejected",
        sync_to_thread=True,
        summary="The failed records of an import, in the upload's own format",
        description=(
            "The records that failed, copied from the stored upload, each with its errors: CSV "
            "gets the original header plus an `_errors` column (`field: code: message`, joined "
            "by `; `), NDJSON and JSON records an `_errors` member (an array of "
            "`{field, code, message}`), Parquet an `_errors` column of such structs. Fix the "
            "values and import the file as it is: `_errors` is ignored. Not compressed, even if "
            "the upload was. `Bulkio-Rejected-Records` gives their number. 409 while the job "
            "runs, and when it stored only its first error rows (BULKIO_MAX_ERROR_ROWS): the "
            "file would miss records."
        ),
        opt={"scope": "imports:read"},
        responses=problem_responses(*GUARDED, 404, 409),
        operation_class=operation(content={200: files([MEDIA_TYPES[f] for f in FORMATS])}),
    )
    def rejected_records(
        self, request: Request[Any, Any, Any], app: AppState, job_id: str
    ) -> Stream:
        principal = principal_of(request)
        job = app.sync(jobs.get, job_id, principal.owner_filter(), "import")
        if job is None:
            raise Problem(404, f"no import job {job_id}")
        if not job.terminal:
            raise Problem(
                409, f"the import is {job.status}: its rejected records are ready when it ends"
            )
        if job.errors_truncated:
            raise Problem(
                409,
                f"this import stored only the first {job.stored_errors} of its "
                f"{job.error_count} error rows (BULKIO_MAX_ERROR_ROWS), so a file of its rejected "
                "records would leave some out: use the error report "
                f"(GET /v1/imports/{job.id}/errors), or raise BULKIO_MAX_ERROR_ROWS and import "
                "again",
            )
        slot = app.slots.take_stream(principal)
        try:
            body, fmt = _rejected(app, job)
            first = next(body)  # reads the stored file's start: its errors are still a problem
        except BaseException:
            app.slots.release(slot)
            raise

        def release() -> None:
            try:
                body.close()
            finally:
                app.slots.release(slot)

        rest = ClosingStream(body, release)
        return GuardedStream(
            chain([first], rest),
            closing=rest,
            stall_seconds=app.settings.stream_stall_seconds,
            media_type=MEDIA_TYPES[fmt],
            headers={
                "Content-Disposition": f'attachment; filename="rejected-{job.id}.{fmt}"',
                "Bulkio-Rejected-Records": str(int(job.failed)),
            },
        )


def _rejected(app: AppState, job: jobs.Job) -> tuple[Generator[bytes, None, None], str]:
    """The rejected file's bytes (engine.reports) and its format; 409 when the upload
    is not stored (a URL import whose fetch failed) or cannot be read again."""
    stored = app.storage.read(job.object_key) if job.object_key else iter(())
    try:
        head = next(stored, None)
    except FileNotFoundError:
        head = None
    if head is None:
        raise Problem(409, f"import {job.id} has no stored file to read its records from")
    fmt = rejected_format(job.format, head)
    s = app.settings

    def body() -> Generator[bytes, None, None]:
        with db.connect_bulk(s.database_url, name=STREAM_CONNECTION) as conn:
            try:
                yield from rejected_file(
                    chain([head], stored),
                    fmt,
                    error_batches(conn, job.id),
                    max_decompressed_bytes=s.max_decompressed_bytes,
                    max_record_bytes=s.max_record_bytes,
                    batch_bytes=s.batch_bytes,
                )
            except FileError as exc:
                raise Problem(409, f"the stored file cannot be read again: {exc}") from exc

    return body(), fmt


async def _checked_source_url(app: AppState, raw: str) -> str:
    """The source URL, if the SSRF guard accepts it now (the worker checks it again when it
    fetches); else 400 with the guard's ``reason``."""
    try:
        return await anyio.to_thread.run_sync(source_url.check, raw, app.settings)
    except netguard.Refused as exc:
        raise Problem(400, f"source_url refused: {exc}", reason=exc.reason) from None
    except netguard.Unresolvable as exc:
        raise Problem(400, f"source_url refused: {exc}", reason="unresolvable") from None


def _max_errors(raw: str | None) -> int | None:
    """The request's ``max_errors`` (absent or empty: None)."""
    value = (raw or "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 19) or (
        int(value) > MAX_ERRORS_LIMIT
    ):
        raise Problem(
            400, f"max_errors must be a whole number from 0 to {MAX_ERRORS_LIMIT}; got {raw!r}"
        )
    return int(value)


def _report(app: AppState, job_id: str, writer: Any) -> Generator[bytes, None, None]:
    yield writer.header()
    with (
        db.connect_bulk(app.settings.database_url, name=STREAM_CONNECTION) as conn,
        conn.cursor() as cur,
    ):
        # The rows and the counters that say whether they are all from one snapshot (the job
        # may still be running).
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute(
            f"SELECT stored_errors, error_count FROM jobs WHERE id = '{uuid.UUID(job_id)}'::uuid"
        )
        counts = cur.fetchone()
        for batch in jobs.stream_errors(cur, job_id):
            yield writer.batch(pl.from_arrow(batch))  # type: ignore[arg-type]
    if counts is not None and counts[0] < counts[1]:
        yield writer.batch(_truncation_marker(int(counts[0]), int(counts[1])))
    yield writer.footer()


def _truncation_marker(stored: int, counted: int) -> pl.DataFrame:
    """The record that ends a truncated report (the same columns in every format)."""
    message = (
        f"the report holds the first {stored} of {counted} error rows of this job; the others "
        "were counted but not stored (BULKIO_MAX_ERROR_ROWS)"
    )
    return pl.DataFrame(
        {"row": [None], "line": [None], "field": [None], "code": [TRUNCATED],
         "message": [message], "value": [None]},
        schema={"row": pl.Int64, "line": pl.Int64, "field": pl.String, "code": pl.String,
                "message": pl.String, "value": pl.String},
    )  # fmt: skip
