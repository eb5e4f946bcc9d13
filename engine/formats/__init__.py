"""Readers: file bytes → decoded bytes → framed blocks → Arrow (polars) batches.

This package's ``__init__`` holds only what the API needs to accept an upload (the format names
and :func:`detect_format`), so importing it loads neither polars nor the native module. The
reading loop is :func:`engine.formats.reader.read_batches`; its stages are ``decode`` (gzip, BOM),
``framing`` (record boundaries, vectorised), ``records`` and ``parse`` (blocks → polars frames).
"""

from __future__ import annotations

from engine.errors import UnsupportedFormat

FORMATS = ("csv", "ndjson", "json")
_EXTENSIONS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json"}

__all__ = ["FORMATS", "detect_format"]


def detect_format(filename: str | None, declared: str | None) -> str:
    """The declared format wins; otherwise the extension (``.gz`` is looked through)."""
    if declared:
        fmt = declared.lower()
        if fmt == "jsonl":
            fmt = "ndjson"
        if fmt not in FORMATS:
            raise UnsupportedFormat(f"format must be one of {', '.join(FORMATS)}; got {declared!r}")
        return fmt
    name = (filename or "").lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in _EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    raise UnsupportedFormat(
        f"cannot tell the format of {filename!r} from its name: pass format=csv|ndjson|json"
    )
