"""What upload sessions refuse, and why; api/uploads.py turns each into a problem::

UploadError
├── UploadNotFound      404: no such upload of the caller's (or it expired)
├── UploadConflict      409: its state forbids the request (``offset``: a local upload's)
├── UploadTooLarge      413: past BULKIO_MAX_UPLOAD_BYTES or the declared size
├── TooManyUploads      429: the owner holds BULKIO_MAX_OPEN_UPLOADS
├── UploadRejected      422: the bytes can never make the declared file
│   └── ChecksumMismatch     ... their SHA-256 is not the declared one
└── UnsupportedStore    501: ``memory://`` takes no upload sessions
"""

from __future__ import annotations


class UploadError(Exception):
    """Base of the refusals below; the message says what to do."""


class UploadNotFound(UploadError):
    """Raised when no upload of that id belongs to the caller (or it has expired)."""


class UploadConflict(UploadError):
    """Raised when the upload's state forbids the request (not all bytes arrived, a wrong
    offset, another request at work, already imported); ``offset``: a local upload's current
    offset, when it matters."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class UploadTooLarge(UploadError):
    """Raised when a size passes BULKIO_MAX_UPLOAD_BYTES, or bytes pass the declared size."""


class TooManyUploads(UploadError):
    """Raised when the owner already holds BULKIO_MAX_OPEN_UPLOADS uploads not imported."""


class UploadRejected(UploadError):
    """Raised when the stored bytes can never make the declared file (a size or checksum
    mismatch); the upload is rejected, its bytes deleted."""


class ChecksumMismatch(UploadRejected):
    """Raised when the bytes' SHA-256 is not the declared one."""

    def __init__(self, declared: str, received: str, upload_id: str) -> None:
        super().__init__(
            f"the bytes received have SHA-256 {received}, not the declared {declared}; "
            f"upload {upload_id} is rejected and cannot be imported: create a new one"
        )
        self.declared = declared
        self.received = received


class UnsupportedStore(UploadError):
    """Raised when the object store cannot take upload sessions (``memory://``)."""
