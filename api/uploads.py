"""``/v1/uploads``: upload sessions (engine/uploads.py) — big files sent straight to storage,
resumable, checked, then imported by ``POST /v1/imports`` with ``upload_id``.

Two controllers: :class:`UploadController` (bearer token: create, read, complete) and
:class:`UploadDataController` (the local store's data URL, whose HMAC signature over its path and
expiry is the credential: it grants appending to that one upload, nothing else).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.to_thread
from litestar import Controller, Request, Response, get, head, patch, post
from litestar.datastructures import ResponseHeader
from litestar.exceptions import InternalServerException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.params import Parameter

from api.auth import authorize, principal_of
from api.limits import too_many
from api.openapi import operation
from api.problems import GUARDED, PROBLEM, Problem, ProblemDetails, problem_responses
from api.schemas import UploadComplete, UploadCreate, UploadPart, UploadView
from api.state import AppState
from engine import limits, uploads
from engine.auth import Principal
from engine.jobs import Job
from engine.storage import signed_query, verify_signature
from engine.uploads import Upload

#: Bytes of a PATCH body gathered before each write to the file (one thread hop per write).
WRITE_BYTES = 1024 * 1024
#: tus' media type of an append's body (any is accepted; octet-stream is documented too).
OFFSET_STREAM = "application/offset+octet-stream"


def _responses(**meanings: str) -> dict[int, ResponseSpec]:
    """problem+json responses with meanings of their own (``s404="..."``)."""
    return {
        int(status[1:]): ResponseSpec(
            data_container=ProblemDetails,
            media_type=PROBLEM,
            description=text,
            generate_examples=False,
        )
        for status, text in meanings.items()
    }


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """engine/uploads.py's refusals as problems."""
    try:
        yield
    except uploads.UploadNotFound as exc:
        raise Problem(404, str(exc)) from None
    except uploads.UploadConflict as exc:
        if exc.offset is None:
            raise Problem(409, str(exc)) from None
        raise Problem(
            409, str(exc), headers={"Upload-Offset": str(exc.offset)}, offset=exc.offset
        ) from None
    except uploads.UploadTooLarge as exc:
        raise Problem(413, str(exc)) from None
    except uploads.TooManyUploads as exc:
        raise Problem(429, str(exc), limit="open_uploads") from None
    except uploads.ChecksumMismatch as exc:
        raise Problem(
            422, str(exc), declared_sha256=exc.declared, received_sha256=exc.received
        ) from None
    except uploads.UploadRejected as exc:
        raise Problem(422, str(exc)) from None
    except uploads.UnsupportedStore as exc:
        raise Problem(501, str(exc), title="Not Implemented") from None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def data_path(upload_id: str) -> str:
    return f"/v1/uploads/{upload_id}/data"


def upload_view(app: AppState, upload: Upload) -> UploadView:
    """The upload with fresh URLs for what is still to send (blocking: S3 calls)."""
    ttl = app.settings.upload_url_ttl_seconds
    sending = upload.status == "open"
    got, arrived = uploads.received(app.storage, upload)
    parts: list[UploadPart] = []
    data_url = None
    if upload.storage == "s3" and upload.status in ("open", "completing"):
        have = {p.number: p for p in arrived}
        missing = [n for n in range(1, upload.parts_count + 1) if n not in have]
        urls: dict[int, str] = {}
        if sending and missing and upload.s3_upload_id:
            urls = dict(
                zip(missing, uploads.part_urls(app.storage, upload, missing, ttl), strict=True)
            )
        for n in range(1, upload.parts_count + 1):
            if n in have:
                parts.append(UploadPart(n, have[n].size, etag=have[n].etag))
            else:
                parts.append(UploadPart(n, upload.part_bytes(n), url=urls.get(n)))
    elif upload.storage == "local" and sending:
        query = signed_query(app.signing_secret, data_path(upload.id), ttl)
        data_url = f"{app.settings.public_url}{data_path(upload.id)}?{urlencode(query)}"
    urls_given = data_url is not None or any(p.url for p in parts)
    return UploadView(
        upload_id=upload.id,
        status=upload.status,
        storage=upload.storage,
        file_name=upload.file_name,
        content_type=upload.content_type,
        size=int(upload.size),
        sha256=upload.sha256,
        received_sha256=upload.received_sha256,
        received_bytes=got,
        part_size=int(upload.part_size),
        parts_count=upload.parts_count,
        parts=parts,
        data_url=data_url,
        urls_expire_in=ttl if urls_given else None,
        complete_url=f"{app.settings.public_url}/v1/uploads/{upload.id}/complete",
        created=_iso(upload.created_at) or "",
        expires=_iso(upload.expires_at) or "",
        completed=_iso(upload.completed_at),
        error=upload.error,
        job_id=str(upload.job_id) if upload.job_id else None,
    )


class UploadController(Controller):
    path = "/v1/uploads"
    tags = ["uploads"]
    guards = [authorize]

    @post(
        "/",
        sync_to_thread=True,
        status_code=201,
        summary="Open an upload session: where to send a big file's bytes",
        description=(
            "For files sent straight to storage, resumably; import it afterwards with "
            "`POST /v1/imports` and `upload_id`. `size` is the exact byte count (at most "
            "BULKIO_MAX_UPLOAD_BYTES); `sha256`, if given, is checked on completion. On S3 the "
            "answer lists `parts`, each with a presigned `url`: PUT each part's bytes there "
            "(`part_size` bytes each, the last one the rest) and keep the `ETag` S3 answers. "
            "On the local store, `data_url` takes the bytes: `PATCH` with `Upload-Offset` "
            "(appends; any number of requests), `HEAD` tells the offset. An upload not imported "
            "within BULKIO_UPLOAD_EXPIRY_HOURS is removed."
        ),
        opt={"scope": "imports:write"},
        responses={
            **problem_responses(*GUARDED),
            **_responses(
                s413="`size` is larger than BULKIO_MAX_UPLOAD_BYTES.",
                s429="A per-token limit is reached, or the owner holds BULKIO_MAX_OPEN_UPLOADS "
                "uploads not yet imported (`limit`: open_uploads).",
            ),
        },
        response_headers=[
            ResponseHeader(name="Location", documentation_only=True, description="The upload's URL")
        ],
    )
    def create(
        self, request: Request[Any, Any, Any], app: AppState, data: UploadCreate
    ) -> Response[UploadView]:
        principal = principal_of(request)
        with _refusals(), app.pool.connection() as conn:
            upload = uploads.create(
                conn,
                app.storage,
                app.settings,
                owner=principal.owner,
                token_id=principal.token_id,
                file_name=data.file_name,
                size=data.size,
                sha256=data.sha256.lower() if data.sha256 else None,
                content_type=data.content_type,
            )
        return Response(
            upload_view(app, upload),
            status_code=201,
            headers={"Location": f"/v1/uploads/{upload.id}"},
        )

    @get(
        "/{upload_id:str}",
        sync_to_thread=True,
        summary="An upload: what arrived, and fresh URLs for the rest",
        description=(
            "Resume after a broken connection from here: on S3, `parts` holds the parts that "
            "arrived (`etag`, `size`) and a fresh presigned `url` for each missing one; on the "
            "local store, `received_bytes` is the offset to send from and `data_url` is signed "
            "afresh. It hands out write URLs, so it needs `imports:write`."
        ),
        opt={"scope": "imports:write"},
        responses={
            **problem_responses(*GUARDED),
            **_responses(s404="No such upload for this token's owner, or it has expired."),
        },
    )
    def show(self, request: Request[Any, Any, Any], app: AppState, upload_id: str) -> UploadView:
        upload = app.sync(uploads.get, upload_id, principal_of(request).owner)
        if upload is None:
            raise Problem(404, f"no upload {upload_id}")
        return upload_view(app, upload)

    @post(
        "/{upload_id:str}/complete",
        status_code=200,
        summary="Complete an upload: check its size and SHA-256",
        description=(
            "On S3, `parts` lists `{part_number, etag}` as S3 answered each PUT (checked "
            "against what S3 holds; omitted: the parts S3 lists); the parts must cover the "
            "declared size exactly, else `409` names the missing or wrong ones and the upload "
            "stays open. The SHA-256 of the bytes is computed by the API (local store: while "
            "they were appended; S3: by reading the assembled object once, in this request). "
            "A mismatch with the declared `sha256` is a `422` naming both digests, and the "
            "upload is rejected for good. Completing a completed upload answers it unchanged."
        ),
        opt={"scope": "imports:write"},
        responses={
            **problem_responses(*GUARDED),
            **_responses(
                s404="No such upload for this token's owner, or it has expired.",
                s409="Bytes are missing (`offset`: how many a local upload holds), another "
                "request is sending or completing, or the upload was rejected.",
                s422="The bytes' SHA-256 (`received_sha256`) is not the declared one "
                "(`declared_sha256`): the upload is rejected.",
            ),
        },
    )
    async def complete(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        upload_id: str,
        data: UploadComplete | None = None,
    ) -> UploadView:
        principal = principal_of(request)
        given = None
        if data is not None and data.parts is not None:
            given = [(p.part_number, p.etag) for p in data.parts]

        def run() -> UploadView:
            with _refusals():
                upload = uploads.complete(app.pool, app.storage, upload_id, principal.owner, given)
            return upload_view(app, upload)

        # Hashing reads the whole file: it holds one of the token's upload slots meanwhile.
        async with app.slots.upload(principal, jobs=False):
            return await anyio.to_thread.run_sync(run)


_DATA_PARAMS = {
    "expires": Parameter(query="expires", description="Unix time the URL expires at"),
    "signature": Parameter(query="signature", description="HMAC-SHA256 of path and expiry"),
}


def _signed_upload(app: AppState, upload_id: str, expires: str, signature: str) -> Upload:
    if not verify_signature(app.signing_secret, data_path(upload_id), expires, signature):
        raise Problem(
            403,
            "this data URL is invalid or has expired; GET /v1/uploads/"
            f"{upload_id} (with a token) for a fresh one",
        )
    upload = app.sync(uploads.get, upload_id, None)
    if upload is None or upload.storage != "local":
        raise Problem(404, f"no local upload {upload_id} (it may have expired)")
    return upload


def _offsets(app: AppState, upload: Upload) -> dict[str, str]:
    got, _ = uploads.received(app.storage, upload)
    return {
        "Upload-Offset": str(got),
        "Upload-Length": str(upload.size),
        "Cache-Control": "no-store",
    }


async def _body(request: Request[Any, Any, Any], stall_seconds: int) -> AsyncIterator[bytes]:
    """The request body's chunks; a :class:`TimeoutError` when none comes for
    ``stall_seconds`` (0: wait for ever)."""
    stream = request.stream()
    while True:
        with anyio.fail_after(stall_seconds or None):
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                return
        yield chunk


class UploadDataController(Controller):
    """The local store's data URL: tus-style appends at an offset, and the offset."""

    path = "/v1/uploads"
    tags = ["uploads"]

    @head(
        "/{upload_id:str}/data",
        sync_to_thread=True,
        summary="How far a local upload got",
        description="`Upload-Offset`: the bytes stored (send from there); `Upload-Length`: "
        "the declared size. The signature is the credential: no bearer token.",
        responses=_responses(
            s400="`expires` or `signature` is missing.",
            s403="The signature is missing, tampered with or expired.",
            s404="No such local upload (it may have expired).",
        ),
        response_headers=[
            ResponseHeader(
                name="Upload-Offset", documentation_only=True, description="Bytes stored"
            ),
            ResponseHeader(
                name="Upload-Length", documentation_only=True, description="The declared size"
            ),
        ],
        operation_class=operation(public=True),
    )
    def offset(
        self,
        app: AppState,
        upload_id: str,
        expires: str = _DATA_PARAMS["expires"],
        signature: str = _DATA_PARAMS["signature"],
    ) -> Response[None]:
        upload = _signed_upload(app, upload_id, expires, signature)
        return Response(None, status_code=200, headers=_offsets(app, upload))

    @patch(
        "/{upload_id:str}/data",
        status_code=204,
        summary="Append bytes to a local upload at an offset",
        description=(
            "tus-style: `Upload-Offset` must be the bytes already stored (`409` with the right "
            "`offset` otherwise); the body is appended and streamed to the file as it arrives. "
            "A request cut half way keeps what arrived: `HEAD` tells where to go on. Bytes past "
            "the declared size are refused (`413`). One request at a time per upload. The "
            "signature is the credential: no bearer token."
        ),
        request_max_body_size=None,  # streamed, capped at the declared size
        responses=_responses(
            s400="`Upload-Offset` is missing or not a whole number.",
            s403="The signature is missing, tampered with or expired.",
            s404="No such local upload (it may have expired).",
            s409="`Upload-Offset` is not the stored offset (`offset` says it), the upload "
            "takes no more bytes (completed), or another request is appending.",
            s408="No bytes arrived for BULKIO_STREAM_STALL_SECONDS; what arrived is kept.",
            s413="The bytes would pass the declared size.",
            s429="The owner's token has BULKIO_MAX_CONCURRENT_UPLOADS uploads in progress.",
        ),
        response_headers=[
            ResponseHeader(
                name="Upload-Offset", documentation_only=True, description="Bytes stored now"
            ),
            ResponseHeader(
                name="Upload-Length", documentation_only=True, description="The declared size"
            ),
        ],
        operation_class=operation(
            public=True,
            request_body=RequestBody(
                required=True,
                content={
                    media: OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
                    )
                    for media in (OFFSET_STREAM, "application/octet-stream")
                },
            ),
        ),
    )
    async def append(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        upload_id: str,
        upload_offset: int = Parameter(header="Upload-Offset", ge=0),
        expires: str = _DATA_PARAMS["expires"],
        signature: str = _DATA_PARAMS["signature"],
    ) -> Response[None]:
        upload = await anyio.to_thread.run_sync(_signed_upload, app, upload_id, expires, signature)
        length = request.headers.get("content-length", "")
        if length.isdigit() and upload_offset + int(length) > int(upload.size):
            raise Problem(
                413,
                f"{length} bytes at offset {upload_offset} pass the declared size of "
                f"{upload.size} bytes",
            )
        with _refusals():
            if upload.token_id is None:  # no token to count it against
                offset = await self._write(app, request, upload, upload_offset)
            else:
                owner = Principal(str(upload.token_id), upload.owner, frozenset(), None, None)
                async with app.slots.upload(owner, jobs=False):
                    offset = await self._write(app, request, upload, upload_offset)
        return Response(
            None,
            status_code=204,
            headers={"Upload-Offset": str(offset), "Upload-Length": str(upload.size)},
        )

    @staticmethod
    async def _write(
        app: AppState, request: Request[Any, Any, Any], upload: Upload, offset: int
    ) -> int:
        appender = await anyio.to_thread.run_sync(
            uploads.open_appender, app.storage, upload, offset
        )
        pending = bytearray()

        async def flush() -> None:
            data = bytes(pending)
            pending.clear()
            await anyio.to_thread.run_sync(appender.write, data)

        try:
            async for chunk in _body(request, app.settings.stream_stall_seconds):
                pending += chunk
                if len(pending) >= WRITE_BYTES:
                    await flush()
        except TimeoutError:
            raise Problem(
                408,
                f"no bytes arrived for {app.settings.stream_stall_seconds} s "
                "(BULKIO_STREAM_STALL_SECONDS); what arrived is kept",
                title="Request Timeout",
            ) from None
        except InternalServerException:  # the client went away: keep what arrived
            pass
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if pending:
                        await flush()
                finally:
                    done, digest = await anyio.to_thread.run_sync(appender.close)
                    if digest is not None:
                        await app.run(uploads.note_digest, upload.id, digest)
        return done


# ---------------------------------------------------------------- POST /v1/imports with upload_id


def upload_source(app: AppState, upload_id: str, owner: str) -> Upload:
    """The upload an import request names (blocking): the owner's, completed (or imported: the
    replay of an Idempotency-Key finds it so)."""
    upload = app.sync(uploads.get, upload_id, owner)
    if upload is None:
        raise Problem(404, f"no upload {upload_id}")
    if upload.status == "rejected":
        raise Problem(409, f"upload {upload_id} was rejected: {upload.error}")
    if upload.status not in ("completed", "imported"):
        detail = f": {upload.error}" if upload.error else ""
        raise Problem(
            409,
            f"upload {upload_id} is {upload.status}{detail}; an upload is imported once "
            f"completed: complete it first (POST /v1/uploads/{upload_id}/complete)",
        )
    return upload


def import_job(
    app: AppState, principal: Principal, slot: str | None, upload_id: str, **fields: Any
) -> Job:
    """Create the import job of a completed upload, within the token's job limit (blocking);
    409 when the upload was imported already."""
    try:
        with _refusals(), app.pool.connection() as conn:
            return uploads.create_job(
                conn,
                upload_id,
                token_id=principal.token_id,
                job_limit=app.slots.job_limit(principal),
                slot=slot,
                **fields,
            )
    except limits.LimitReached as exc:
        raise too_many(exc) from exc
