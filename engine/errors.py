"""Exceptions raised inside the engine.

    BulkioError
    ├── FileError            the file cannot be read at all: the job fails with this message
    │   ├── UnsupportedFormat
    │   ├── DecompressedTooLarge
    │   ├── InvalidEncoding
    │   ├── MissingColumns
    │   └── RecordTooLarge
    ├── JobStateError        a job is not in a state that allows the operation
    ├── LeaseLost            another worker took over the job; stop without committing
    └── IdempotencyError
        ├── IdempotencyConflict   same key, different request  (HTTP 422)
        └── IdempotencyInProgress same key, first request still being accepted (HTTP 409)

Bad *records* are not exceptions: they are error rows (see ``engine.imports.validate``).
"""

from __future__ import annotations


class BulkioError(Exception):
    """Base of every exception the engine raises on purpose."""


class FileError(BulkioError):
    """Raised when an uploaded file cannot be read at all; the message is shown to the client."""


class UnsupportedFormat(FileError):
    """Raised when the format is neither given nor recognisable from the file name."""


class DecompressedTooLarge(FileError):
    """Raised when a gzip file expands beyond ``max_decompressed_bytes``."""


class InvalidEncoding(FileError):
    """Raised when a text file is not valid UTF-8 (the message gives the byte offset and line)."""


class MissingColumns(FileError):
    """Raised when a CSV header lacks required columns or repeats a column name."""


class RecordTooLarge(FileError):
    """Raised when one record exceeds ``max_record_bytes`` (often an unbalanced CSV quote)."""


class JobStateError(BulkioError):
    """Raised when a job is not in a state that allows the requested operation."""


class LeaseLost(BulkioError):
    """Raised when a worker finds that its lease on a job was taken over by another worker."""


class IdempotencyError(BulkioError):
    """Base of idempotency-key failures."""


class IdempotencyConflict(IdempotencyError):
    """Raised when an idempotency key is reused with a different request."""


class IdempotencyInProgress(IdempotencyError):
    """Raised when an idempotency key's first request is still being accepted."""
