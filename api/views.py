"""Job rows → response structs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import msgspec

from api.problems import Problem
from api.schemas import ErrorRow, JobView, Progress
from api.state import AppState
from engine import jobs
from engine.jobs import Job
from engine.storage import signed_query


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def job_view(
    job: Job,
    *,
    base_url: str,
    errors: list[dict[str, Any]] | None = None,
    download_url: str | None = None,
    download_ttl: int | None = None,
    replayed: bool = False,
    inline_errors: bool = True,
    events_url: str | None = None,
) -> JobView:
    now = datetime.now(UTC)
    duration = jobs.duration_ms(job, now)
    processed = int(job.processed)
    total_bytes = job.total_bytes
    bytes_read = int(job.bytes_read)
    percent = None
    if total_bytes:
        percent = (
            100.0
            if job.status == "completed"
            else round(min(bytes_read / total_bytes, 1.0) * 100, 2)
        )
    report = None
    if job.kind == "import":
        report = f"{base_url}/v1/imports/{job.id}/errors?" + urlencode({"format": "ndjson"})
    return JobView(
        job_id=job.id,
        kind=job.kind,
        status=job.status,
        resource=job.resource,
        format=job.format,
        mode=job.mode,
        total_records=job.total_records,
        processed=processed,
        successful=int(job.successful),
        failed=int(job.failed),
        error_count=int(job.error_count),
        stored_errors=int(job.stored_errors),
        errors_truncated=job.errors_truncated,
        inserted_records=int(job.inserted),
        updated_records=int(job.updated),
        duration_ms=duration,
        rows_per_sec=round(processed / (duration / 1000), 1) if duration else None,
        error_rate=round(int(job.failed) / processed, 6) if processed else None,
        progress=Progress(bytes_read, total_bytes, percent),
        attempts=int(job.attempts),
        created=_iso(job.created_at) or "",
        updated=_iso(job.updated_at) or "",
        started=_iso(job.started_at),
        finished=_iso(job.finished_at),
        error=job.error if job.status == "failed" else None,
        warnings=list(job.warnings or []),
        error_report=report,
        errors=[ErrorRow(**e) for e in (errors or [])] if inline_errors else msgspec.UNSET,
        file_name=job.file_name,
        options=dict(job.options or {}),
        download_url=download_url,
        download_expires_in=download_ttl if download_url else None,
        result_bytes=job.result_bytes,
        replayed=replayed,
        events_url=events_url,
    )


def download_url(app: AppState, job: Job) -> str:
    """A presigned S3 URL, or an HMAC-signed URL of ``/v1/downloads`` for other stores."""
    ttl = app.settings.download_url_ttl_seconds
    if job.result_key is None:
        raise ValueError(f"job {job.id} has no result file")
    presigned = app.storage.presign(job.result_key, ttl)
    if presigned is not None:
        return presigned
    path = f"/v1/downloads/{job.id}"
    query = signed_query(app.signing_secret, path, ttl)
    return f"{app.settings.public_url}{path}?{urlencode(query)}"


def events_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/events"


def events_url(app: AppState, job: Job) -> str:
    """``/v1/jobs/{id}/events`` signed for BULKIO_EVENTS_URL_TTL_SECONDS: the signature grants
    reading this job's events, nothing else (api/events.py)."""
    path = events_path(job.id)
    query = signed_query(app.signing_secret, path, app.settings.events_url_ttl_seconds)
    return f"{app.settings.public_url}{path}?{urlencode(query)}"


def load_job_view(app: AppState, job_id: str, kind: str | None, owner: str | None) -> JobView:
    """The job as seen by ``owner`` (None: any owner, for admin tokens); 404 otherwise."""
    with app.pool.connection() as conn:
        job = jobs.get(conn, job_id, owner, kind)
        if job is None:
            raise Problem(404, f"no {kind or ''} job {job_id}".replace("  ", " "))
        errors = (
            jobs.first_errors(conn, job.id, app.settings.inline_errors)
            if job.kind == "import"
            else []
        )
    url = download_url(app, job) if job.status == "completed" and job.result_key else None
    return job_view(
        job,
        base_url=app.settings.public_url,
        errors=errors,
        download_url=url,
        download_ttl=app.settings.download_url_ttl_seconds,
        events_url=events_url(app, job),
    )
