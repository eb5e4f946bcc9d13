"""Readers: file bytes → decoded bytes → framed blocks → Arrow (polars) batches.

This package's ``__init__`` holds only what the API needs to accept an upload (the format names
and :func:`detect_format`), so importing it loads neither polars nor the native module. The
reading loop is :func:`engine.formats.reader.read_batches`; its stages are ``decode`` (gzip,
zstd, BOM), ``framing`` (record boundaries, vectorised), ``records`` and ``parse`` (blocks →
polars frames); Parquet files are read by ``parquet`` (Arrow record batches).
"""

from __future__ import annotations

from engine.errors import UnsupportedFormat

FORMATS = ("csv", "ndjson", "json", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".parquet": "parquet",
}
#: Compression suffixes looked through (the compression itself is told by the file's bytes).
_COMPRESSED = (".gz", ".zst", ".zstd")
#: The first bytes of a Parquet file.
PARQUET_MAGIC = b"PAR1"
#: The media type of each format (exports, error reports, rejected records, OpenAPI).
MEDIA_TYPES = {
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}
#: The media type of a file compressed as a whole, by compression.
COMPRESSED_MEDIA_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd"}

__all__ = ["COMPRESSED_MEDIA_TYPES", "FORMATS", "MEDIA_TYPES", "PARQUET_MAGIC", "detect_format"]


def detect_format(filename: str | None, declared: str | None, head: bytes = b"") -> str:
    """The declared format wins; otherwise the extension (``.gz``, ``.zst`` looked through);
    otherwise ``parquet`` when the file's first bytes (``head``) are Parquet's magic."""
    if declared:
        fmt = declared.lower()
        if fmt == "jsonl":
            fmt = "ndjson"
        if fmt not in FORMATS:
            raise UnsupportedFormat(f"format must be one of {', '.join(FORMATS)}; got {declared!r}")
        return fmt
    name = (filename or "").lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for ext, fmt in _EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    raise UnsupportedFormat(
        f"cannot tell the format of {filename!r} from its name: pass format={'|'.join(FORMATS)}"
    )
