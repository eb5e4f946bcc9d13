"""Request and response shapes (msgspec). Field names follow what clients of the earlier
services already read (``job_id``, ``total_records``, ``processed``, ``successful``, ``failed``,
``duration_ms``, ``rows_per_sec``, ``error_report``, ``errors``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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


#: engine.webhooks.EVENT_TYPES (tests/unit/test_webhook_format.py checks they are the same).
WebhookEventType = Literal[
    "import.completed",
    "import.failed",
    "import.cancelled",
    "export.completed",
    "export.failed",
    "export.cancelled",
]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A webhook endpoint to register: where to POST, and which job ends to tell."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    event_types: Annotated[list[WebhookEventType], msgspec.Meta(min_length=1)]
    description: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^\x00]*$")] = ""


class WebhookView(msgspec.Struct):
    id: str
    owner: str
    url: str
    event_types: list[str]
    description: str
    #: False once the receiver answered 410 Gone (``disabled_reason`` says when and why).
    enabled: bool
    disabled_reason: str | None
    created: str
    updated: str
    #: After a rotation: until when the previous secret still signs beside the new one.
    previous_secret_expires: str | None
    deliveries_url: str


class WebhookWithSecret(WebhookView):
    """The endpoint with its signing secret: shown once, when created or rotated."""

    secret: str


class WebhookList(msgspec.Struct):
    webhooks: list[WebhookView]


class AttemptView(msgspec.Struct):
    attempt: int
    at: str
    duration_ms: int | None
    #: The receiver's HTTP status; null when there was no answer (see ``error``).
    status_code: int | None
    error: str | None


class DeliveryView(msgspec.Struct):
    #: The message's ``webhook-id``, the same on every attempt.
    id: str
    event_type: str
    job_id: str
    state: Literal["pending", "delivered", "failed"]
    attempt_count: int
    next_attempt: str | None
    last_status: int | None
    last_error: str | None
    event_time: str
    created: str
    finished: str | None
    #: The newest attempts, oldest first.
    attempts: list[AttemptView]


class AttemptList(msgspec.Struct):
    """A page of one delivery's attempts, oldest first; ``next`` is the next page."""

    attempts: list[AttemptView]
    next_after: int | None
    next: str | None


class DeliveryList(msgspec.Struct):
    """A page of deliveries, newest first; ``next`` is the next page."""

    deliveries: list[DeliveryView]
    next_cursor: str | None
    next: str | None


#: A SHA-256 in hexadecimal (either case).
SHA256_HEX = r"^[0-9a-fA-F]{64}$"
#: Text without control characters (C0, DEL, C1).
NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"


class UploadCreate(msgspec.Struct, forbid_unknown_fields=True):
    """An upload session to open: the file's name (a label; it tells the format when an import
    gives none), its exact size in bytes, and optionally its SHA-256 (checked on completion)."""

    #: A label, without control characters; the stored object is named by the upload's id.
    file_name: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_CONTROLS)]
    size: Annotated[int, msgspec.Meta(ge=1)]
    sha256: Annotated[str, msgspec.Meta(pattern=SHA256_HEX)] | None = None
    content_type: Annotated[str, msgspec.Meta(max_length=200, pattern=NO_CONTROLS)] | None = None


class PartDone(msgspec.Struct, forbid_unknown_fields=True):
    part_number: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    etag: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class UploadComplete(msgspec.Struct, forbid_unknown_fields=True):
    """S3: the parts as S3 answered their PUTs (null: the parts S3 lists); local store: empty."""

    parts: Annotated[list[PartDone], msgspec.Meta(max_length=10_000)] | None = None


class UploadPart(msgspec.Struct):
    """One part of an S3 upload: one that arrived has its `etag`; a missing one a presigned
    `url` to PUT its bytes to."""

    part_number: int
    size: int
    etag: str | None = None
    url: str | None = None


class UploadView(msgspec.Struct, omit_defaults=False):
    upload_id: str
    #: open | completing | completed | rejected | imported
    status: str
    #: s3: PUT parts to their `url`s; local: PATCH `data_url` (tus-style offsets).
    storage: str
    file_name: str | None
    content_type: str | None
    size: int
    #: The SHA-256 declared when the upload was created.
    sha256: str | None
    #: The SHA-256 of the bytes, once every byte arrived (local) or the upload is completed.
    received_sha256: str | None
    #: Bytes that arrived (local: the offset to send from).
    received_bytes: int
    part_size: int
    parts_count: int
    #: S3: every part, with an `etag` once arrived, else a fresh `url`; local: empty.
    parts: list[UploadPart]
    #: Local store: the signed URL to PATCH (append at `Upload-Offset`) and HEAD.
    data_url: str | None
    #: Seconds the part URLs / data URL stay valid (GET the upload again for fresh ones).
    urls_expire_in: int | None
    complete_url: str
    created: str
    #: The upload is removed if not imported by then (BULKIO_UPLOAD_EXPIRY_HOURS).
    expires: str
    completed: str | None = None
    #: Why it was rejected (size or checksum mismatch).
    error: str | None = None
    #: The import job, once imported.
    job_id: str | None = None
