"""Writers: polars frames (one per Arrow batch) → bytes, batch by batch, for HTTP and storage.

Each writer follows header → batch → … → footer with no state but "is this the first batch",
so output can stream with constant memory. Timestamps are written as RFC 3339 UTC (``…Z``),
never polars' ``+0000``; list columns are JSON arrays (also inside CSV cells).
"""

from __future__ import annotations

import io
from typing import ClassVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.formats import MEDIA_TYPES

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
#: Cells a spreadsheet would evaluate as a formula (CSV injection): a first non-blank character
#: ``=``, ``+``, ``-`` or ``@`` (spreadsheets skip leading blanks: "  =cmd()", "\t=1"; ``\s`` is
#: Unicode-aware, so no-break and ideographic spaces count too), or a leading tab or CR.
FORMULA_START = r"^(?:[\t\r]|\s*[=+\-@])"

__all__ = ["WRITERS", "Writer", "writer_for"]


def _texty(frame: pl.DataFrame, *, lists_as_json: bool) -> pl.DataFrame:
    exprs: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                col = col.dt.replace_time_zone("UTC")
            exprs.append(col.dt.convert_time_zone("UTC").dt.to_string(TIMESTAMP_FORMAT).alias(name))
        elif lists_as_json and isinstance(dtype, pl.List):
            encoded = pl.struct(col.alias("v")).struct.json_encode()
            exprs.append(
                pl.when(col.is_null())
                .then(None)
                .otherwise(encoded.str.slice(5, None).str.head(-1))
                .alias(name)
            )
        else:
            exprs.append(col)
    return frame.select(exprs)


class Writer:
    content_type: ClassVar[str]
    extension: ClassVar[str]

    def __init__(self) -> None:
        self.first = True

    def header(self) -> bytes:
        return b""

    def batch(self, frame: pl.DataFrame) -> bytes:
        raise NotImplementedError

    def footer(self) -> bytes:
        return b""


class NdjsonWriter(Writer):
    content_type = MEDIA_TYPES["ndjson"]
    extension = "ndjson"

    def batch(self, frame: pl.DataFrame) -> bytes:
        if frame.is_empty():
            return b""
        return _texty(frame, lists_as_json=False).write_ndjson().encode()


class JsonWriter(Writer):
    """One JSON array. NDJSON lines never hold a raw newline, so newline → ``,\\n`` is exact."""

    content_type = MEDIA_TYPES["json"]
    extension = "json"

    def header(self) -> bytes:
        return b"["

    def batch(self, frame: pl.DataFrame) -> bytes:
        if frame.is_empty():
            return b""
        body = _texty(frame, lists_as_json=False).write_ndjson().encode()
        body = body[:-1].replace(b"\n", b",\n")
        lead = b"\n" if self.first else b",\n"
        self.first = False
        return lead + body

    def footer(self) -> bytes:
        return b"]\n" if self.first else b"\n]\n"


class CsvWriter(Writer):
    content_type = MEDIA_TYPES["csv"] + "; charset=utf-8"
    extension = "csv"

    def __init__(self, columns: list[str], *, formula_guard: bool = True) -> None:
        super().__init__()
        self.columns = columns
        self.formula_guard = formula_guard

    def header(self) -> bytes:
        return pl.DataFrame(schema=dict.fromkeys(self.columns, pl.String)).write_csv().encode()

    def batch(self, frame: pl.DataFrame) -> bytes:
        if frame.is_empty():
            return b""
        out = _texty(frame, lists_as_json=True)
        if self.formula_guard:
            out = out.with_columns(
                pl.when(pl.col(n).str.contains(FORMULA_START))
                .then("'" + pl.col(n))
                .otherwise(pl.col(n))
                .alias(n)
                for n, t in out.schema.items()
                if t == pl.String
            )
        return out.write_csv(include_header=False).encode()


class ParquetWriter(Writer):
    """Row group per batch; bytes are handed out as soon as the writer flushes them."""

    content_type = MEDIA_TYPES["parquet"]
    extension = "parquet"

    def __init__(self) -> None:
        super().__init__()
        self._sink = io.BytesIO()
        self._writer: pq.ParquetWriter | None = None

    def _drain(self) -> bytes:
        data = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return data

    def batch(self, frame: pl.DataFrame) -> bytes:
        table = frame.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._sink, table.schema, compression="zstd")
        self._writer.write_table(table)
        return self._drain()

    def finish_schema(self, schema: pa.Schema) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")

    def footer(self) -> bytes:
        if self._writer is not None:
            self._writer.close()
        return self._drain()


WRITERS = ("csv", "ndjson", "json", "parquet")


def writer_for(fmt: str, columns: list[str], *, formula_guard: bool = True) -> Writer:
    if fmt == "csv":
        return CsvWriter(columns, formula_guard=formula_guard)
    if fmt == "ndjson":
        return NdjsonWriter()
    if fmt == "json":
        return JsonWriter()
    if fmt == "parquet":
        return ParquetWriter()
    raise ValueError(f"format must be one of {', '.join(WRITERS)}")
