"""Request and response shapes (msgspec). Field names follow what clients of the earlier
services already read (``job_id``, ``total_records``, ``processed``, ``successful``, ``failed``,
``duration_ms``, ``rows_per_sec``, ``error_report``, ``errors``)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class ErrorRow(msgspec.Struct):
    row: int
    line: int | None
    field: str | None
    code: str
    message: str
    value: str | None


class Progress(msgspec.Struct):
    bytes_read: int
    total_bytes: int | None
    percent: float | None


class JobView(msgspec.Struct, omit_defaults=False):
    job_id: str
    kind: str
    status: str
    resource: str
    format: str
    mode: str | None
    total_records: int | None
    processed: int
    successful: int
    failed: int
    error_count: int
    #: Error rows stored (at most BULKIO_MAX_ERROR_ROWS): those the error report holds.
    stored_errors: int
    #: error_count > stored_errors: the report holds only the first error rows.
    errors_truncated: bool
    inserted_records: int
    updated_records: int
    duration_ms: int | None
    rows_per_sec: float | None
    error_rate: float | None
    progress: Progress
    attempts: int
    created: str
    updated: str
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    warnings: list[str] = msgspec.field(default_factory=list)
    error_report: str | None = None
    #: The first errors (BULKIO_INLINE_ERRORS); left out of job lists.
    errors: list[ErrorRow] | msgspec.UnsetType = msgspec.field(default_factory=list)
    file_name: str | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    download_url: str | None = None
    download_expires_in: int | None = None
    result_bytes: int | None = None
    replayed: bool = False
    #: The job's events (JSON or Server-Sent Events) for a short while without a token: for
    #: EventSource, which cannot send one (BULKIO_EVENTS_URL_TTL_SECONDS).
    events_url: str | None = None


class ExportRequest(msgspec.Struct, forbid_unknown_fields=True):
    resource: str
    format: str = "ndjson"
    fields: list[str] | None = None
    filters: dict[str, Any] | None = None
    compression: str | None = None


class Health(msgspec.Struct):
    status: Literal["ok", "degraded"]
    postgres: str
    redis: str


class JobList(msgspec.Struct):
    """A page of ``GET /v1/jobs``: newest first; ``next`` is the next page (same filters)."""

    jobs: list[JobView]
    next_cursor: str | None
    next: str | None


class EventView(msgspec.Struct):
    seq: int
    type: str
    created: str
    data: dict[str, Any]


class EventPage(msgspec.Struct):
    """Events after ``after``; ask again with ``after=next_after`` for more."""

    events: list[EventView]
    next_after: int
