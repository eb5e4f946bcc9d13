"""``/v1/downloads/{job_id}``: the result of an export job, for stores without presigned URLs.

The URL is the one ``GET /v1/exports/{id}`` hands out: ``expires`` (Unix seconds) and an HMAC
``signature`` over the path and expiry. A tampered or expired URL gets 403. The key is the same in
every API process and across restarts (``engine.storage.signing_secret``: the setting, or the one
kept in PostgreSQL), so any process verifies what another signed.
"""

from __future__ import annotations

from litestar import Controller, get
from litestar.params import Parameter
from litestar.response import Stream

from api.exports import media_type
from api.openapi import COMPRESSED_MEDIA, EXPORT_MEDIA, files, operation
from api.problems import Problem, problem_responses
from api.state import AppState
from api.streaming import ClosingStream, GuardedStream
from engine import jobs
from engine.exports.query import ExportRequestError, from_options
from engine.storage import verify_signature


class DownloadController(Controller):
    path = "/v1/downloads"
    tags = ["exports"]

    @get(
        "/{job_id:str}",
        sync_to_thread=True,
        summary="Download an export (signed URL)",
        description="The signature is the credential: no bearer token. 403: a missing, tampered "
        "or expired signature; 404: the job has no result (yet).",
        responses=problem_responses(400, 403, 404),
        operation_class=operation(
            public=True, content={200: files([*EXPORT_MEDIA.values(), *COMPRESSED_MEDIA])}
        ),
    )
    def download(
        self,
        app: AppState,
        job_id: str,
        expires: str = Parameter(default="", description="Unix time the URL expires at"),
        signature: str = Parameter(default="", description="HMAC-SHA256 of path and expiry"),
    ) -> Stream:
        if not verify_signature(app.signing_secret, f"/v1/downloads/{job_id}", expires, signature):
            raise Problem(
                403,
                "this download URL is invalid or has expired; ask "
                f"GET /v1/exports/{job_id} for a fresh one",
            )
        job = app.sync(jobs.get, job_id, None, "export")
        if job is None or job.status != "completed" or not job.result_key:
            raise Problem(404, f"export job {job_id} has no result")
        try:
            spec, _ = from_options(app.catalog, job.options)
        except ExportRequestError as exc:
            raise Problem(404, f"export job {job_id} has no readable result: {exc}") from exc
        chunks = ClosingStream(app.storage.read(job.result_key))
        return GuardedStream(
            chunks,
            closing=chunks,
            stall_seconds=app.settings.stream_stall_seconds,
            media_type=media_type(spec),
            headers={
                "Content-Disposition": f'attachment; filename="{spec.file_name}"',
                "Content-Length": str(job.result_bytes),
            },
        )
