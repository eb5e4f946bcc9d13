"""Upload sessions: a file sent straight to storage, resumable, checked, then imported once.

The state is a row of ``uploads`` (migration 0012, which draws the status graph; ``sessions``);
the bytes go to the object store under ``uploads/<id>/data``:

* **S3**: a multipart upload. The client PUTs each part to a presigned URL (engine/multipart.py);
  what arrived is S3's own ListParts, so nothing is recorded per part. Completing checks that the
  parts cover the declared size exactly, assembles them, then reads the object once, in the API
  process that completes it, to compute its SHA-256 (S3 keeps no SHA-256 of a whole multipart
  object).
* **local store** (``local``): the client appends through the API (``PATCH
  /v1/uploads/{id}/data`` at an offset, tus-style); the file's size is the offset, so a request
  cut half way keeps what arrived. The SHA-256 is computed while appending.

A completed upload becomes an import job's source in the transaction that creates the job
(:func:`create_job`): the job's ``object_key`` is the upload's, so
the worker reads it as any uploaded file and retention deletes it with the job. Uploads not
imported by their ``expires_at`` are removed by :func:`expire` (``expiry``, run by
engine/retention.py). Refusals are the exceptions of ``errors``.
"""

from __future__ import annotations

from engine.uploads.errors import (
    ChecksumMismatch,
    TooManyUploads,
    UnsupportedStore,
    UploadConflict,
    UploadError,
    UploadNotFound,
    UploadRejected,
    UploadTooLarge,
)
from engine.uploads.expiry import expire
from engine.uploads.local import Appender
from engine.uploads.sessions import (
    Upload,
    complete,
    create,
    create_job,
    get,
    note_digest,
    object_path,
    open_appender,
    part_size_for,
    part_urls,
    received,
)

__all__ = [
    "Appender",
    "ChecksumMismatch",
    "TooManyUploads",
    "UnsupportedStore",
    "Upload",
    "UploadConflict",
    "UploadError",
    "UploadNotFound",
    "UploadRejected",
    "UploadTooLarge",
    "complete",
    "create",
    "create_job",
    "expire",
    "get",
    "note_digest",
    "object_path",
    "open_appender",
    "part_size_for",
    "part_urls",
    "received",
]
