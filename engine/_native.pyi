# Type stub for the Rust extension engine._native (native/src/lib.rs).
# Only engine/checks.py imports this module; use engine.checks everywhere else.
#
# Checked against the built module by `make lint`, which runs (from the repository root):
#
#     python -m mypy.stubtest engine._native --mypy-config-file pyproject.toml
#
# Every function takes one Arrow array of type string, large_string, string_view (or null)
# through the Arrow PyCapsule interface (__arrow_c_array__: a pyarrow.Array, a chunk of a
# pyarrow.ChunkedArray, polars `Series.to_arrow()`, ...), reads it zero-copy and returns a new
# pyarrow array of the same length; null inputs give null outputs. Any other input raises
# NativeError (whose message names the offending type).

from typing import Protocol, type_check_only

import pyarrow as pa

__all__ = [
    "NativeError",
    "is_email",
    "is_slug",
    "is_token_id",
    "is_uuid",
    "utf8_error_offset",
    "word_count",
]

@type_check_only
class ArrowArrayExportable(Protocol):
    """Anything implementing the Arrow PyCapsule array export."""

    def __arrow_c_array__(
        self, requested_schema: object | None = None
    ) -> tuple[object, object]: ...

class NativeError(Exception):
    """Unsupported input (e.g. a non-string Arrow array) or an internal failure."""

def is_uuid(arr: ArrowArrayExportable) -> pa.BooleanArray:
    """Canonical dashed UUID (8-4-4-4-12 hex, case-insensitive)."""

def is_email(arr: ArrowArrayExportable) -> pa.BooleanArray:
    """Pragmatic e-mail address syntax."""

def is_slug(arr: ArrowArrayExportable) -> pa.BooleanArray:
    """Kebab-case slug ``^[a-z0-9]+(-[a-z0-9]+)*$``, at most 200 bytes."""

def is_token_id(arr: ArrowArrayExportable, prefix: str, max_len: int) -> pa.BooleanArray:
    """``prefix`` followed by 1..=max_len characters of ``[A-Za-z0-9_-]``."""

def word_count(arr: ArrowArrayExportable) -> pa.UInt32Array:
    """Number of Unicode-whitespace-separated words."""

def utf8_error_offset(data: bytes) -> int | None:
    """Offset of the first byte that is not valid UTF-8, or None (reads bytes, not Arrow)."""
