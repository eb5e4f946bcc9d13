"""Reports on an import's failed records: the rejected records, in the upload's own format, ready
to be fixed and imported.

The stored upload is read again (decoded like an import: gzip, zstd, BOM) and framed into records
the way the import framed them, so record ``n`` is the import's row ``n``; the job's error rows
(ordered by row) say which records failed and why. Only those records are written, each a copy
of the original bytes plus its errors:

* CSV: the original header line plus an ``_errors`` column; each failed record as it was (quoted
  newlines included), a record with fewer fields than the header padded with empty ones, then
  ``_errors``: ``field: code: message`` per error, joined by ``; ``.
* NDJSON: each failed line with an ``_errors`` member added before its closing ``}`` (an array of
  ``{field, code, message}``); a line that is not a JSON object becomes
  ``{"_errors": [...], "_record": "<the line>"}``.
* JSON array: the failed elements the same way, in one array.
* Parquet: the failed rows with every original column, plus ``_errors`` (a list of
  ``{field, code, message}`` structs).

Importing the fixed file needs nothing more: ``_errors`` is ignored without a warning. Nothing is
held but one block of records and the error rows of that block: the output streams.

Only ``engine.formats`` is used here (no validation, no native module): the API serves this.
Parquet uploads are spooled to a temporary file of the API process to be read (random access).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import jobs
from engine.errors import FileError, MissingColumns
from engine.exports.writers import FORMULA_START
from engine.formats import PARQUET_MAGIC, parquet
from engine.formats.decode import GZIP_MAGIC, ZSTD_MAGIC, compressed_parquet, decoded
from engine.formats.framing import (
    WS,
    CsvFramer,
    Framer,
    JsonArrayFramer,
    LineFramer,
    as_array,
    blocks,
)
from engine.formats.parse import csv_fields_per_record
from engine.formats.records import Layout, first_solid, last_solid, layout

#: The added column (CSV, Parquet) or member (NDJSON, JSON).
ERRORS = parquet.ERRORS_COLUMN
#: Records framed at a time (the output of one block is one chunk of the response).
BLOCK_ROWS = 20_000
BLOCK_BYTES = 8 * 1024 * 1024
#: Bytes around a JSON record that are not part of it: whitespace and the array's commas.
_JSON_GAP = WS.copy()
_JSON_GAP[0x2C] = True

__all__ = ["ERRORS", "by_row", "error_batches", "rejected_file", "rejected_format"]


# ---------------------------------------------------------------- error rows


def error_batches(conn: Any, job_id: str) -> Iterator[pl.DataFrame]:
    """The job's error rows (row, field, code, message) by row, streamed from an ADBC connection
    (``engine.jobs.stream_errors``)."""
    with conn.cursor() as cur:
        for batch in jobs.stream_errors(cur, job_id, ("row", "field", "code", "message")):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame


def _aggregate(errors: pl.DataFrame) -> pl.DataFrame:
    """One row per failed record: ``row``, ``text`` (CSV), ``json`` (an array), ``items``."""
    field, code, message = pl.col("field"), pl.col("code"), pl.col("message")
    described = (
        pl.when(field.is_null())
        .then(pl.concat_str([code, pl.lit(": "), message]))
        .otherwise(pl.concat_str([field, pl.lit(": "), code, pl.lit(": "), message]))
    )
    item = pl.struct(field, code, message)
    return errors.group_by("row", maintain_order=True).agg(
        described.str.join("; ").alias("text"),
        pl.concat_str(pl.lit("["), item.struct.json_encode().str.join(","), pl.lit("]")).alias(
            "json"
        ),
        item.alias("items"),
    )


def by_row(errors: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """Error rows (ordered by row, in batches) aggregated per failed record (see
    :func:`_aggregate`), a record's rows never split across two frames."""
    carry: pl.DataFrame | None = None
    for frame in errors:
        frame = frame.select("row", "field", "code", "message")
        if carry is not None:
            frame = pl.concat([carry, frame])
        if frame.is_empty():
            continue
        last = frame["row"][-1]
        carry = frame.filter(pl.col("row") == last)
        done = frame.filter(pl.col("row") < last)
        if done.height:
            yield _aggregate(done)
    if carry is not None and carry.height:
        yield _aggregate(carry)


class _Failed:
    """The aggregated error rows, handed out block by block (both are in row order)."""

    def __init__(self, frames: Iterator[pl.DataFrame]) -> None:
        self._frames = frames
        self._held = pl.DataFrame(schema={"row": pl.Int64, "text": pl.String, "json": pl.String})
        self._more = True

    def upto(self, last_row: int) -> pl.DataFrame:
        """Failed records with row ≤ ``last_row`` (and not handed out before)."""
        while self._more and (self._held.is_empty() or self._held["row"][-1] <= last_row):
            frame = next(self._frames, None)
            if frame is None:
                self._more = False
            else:
                self._held = pl.concat([self._held, frame], how="diagonal_relaxed")
        taken = self._held.filter(pl.col("row") <= last_row)
        self._held = self._held.filter(pl.col("row") > last_row)
        return taken

    @property
    def done(self) -> bool:
        return not self._more and self._held.is_empty()


# ---------------------------------------------------------------- text formats


def _values(data: bytes, starts: np.ndarray, stops: np.ndarray) -> pa.Array:
    """Byte ranges of ``data`` (in order, not overlapping) as one Arrow binary array: every
    other slot of an array over ``data`` whose offsets are the ranges' ends, taken."""
    offsets = np.empty(2 * len(starts), dtype=np.int64)
    offsets[0::2], offsets[1::2] = starts, stops
    whole = pa.Array.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return whole.take(pa.array(np.arange(0, len(offsets) - 1, 2), type=pa.int64()))


def _joined(parts: list[pa.Array | str]) -> bytes:
    """Per record, the concatenation of ``parts`` (arrays or constants); then all of them, as
    the one values buffer Arrow built (no Python object per record)."""
    arrays = [
        p if isinstance(p, pa.Array) else pa.scalar(p.encode(), pa.large_binary()) for p in parts
    ]
    out = pc.binary_join_element_wise(*arrays, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(out.buffers()[1], dtype=np.int64)
    first, last = int(offsets[out.offset]), int(offsets[out.offset + len(out)])
    return out.buffers()[2].slice(first, last - first).to_pybytes()


def _binary(series: pl.Series) -> pa.Array:
    return series.to_arrow().cast(pa.large_string()).cast(pa.large_binary())


def _csv_cell(text: pl.Series) -> pa.Array:
    """The ``_errors`` cell: quoted, and guarded like an export's cells (a column named
    ``=cmd()`` would start it with a formula)."""
    guarded = pl.select(
        pl.when(text.str.contains(FORMULA_START)).then("'" + text).otherwise(text)
    ).to_series()
    quoted = '"' + guarded.str.replace_all('"', '""', literal=True) + '"'
    return _binary(quoted)


def _csv_block(block: Any, geo: Layout, idx: np.ndarray, failed: pl.DataFrame, *,
               columns: int, eol: str) -> bytes:  # fmt: skip
    arr = as_array(block.data)
    ends = geo.ends[idx]
    stops = ends - (arr[ends - 1] == 0x0A)
    stops -= (stops > geo.starts[idx]) & (arr[np.maximum(stops - 1, 0)] == 0x0D)
    pad = np.maximum(columns - csv_fields_per_record(block, geo)[idx], 0)
    padding = pa.array([("," * int(n) + ",").encode() for n in np.unique(pad)], pa.large_binary())
    commas = padding.take(pa.array(np.searchsorted(np.unique(pad), pad)))
    records = _values(block.data, geo.starts[idx], stops)
    return _joined([records, commas, _csv_cell(failed["text"]), eol])


def _json_block(block: Any, geo: Layout, idx: np.ndarray, failed: pl.DataFrame, *,
                array: bool, first: bool) -> bytes:  # fmt: skip
    """NDJSON lines or JSON array elements with ``_errors`` inserted before their last ``}``."""
    arr = as_array(block.data)
    gap = _JSON_GAP if array else WS
    starts, ends = geo.starts[idx], geo.ends[idx]
    head = first_solid(arr, starts, ends, gap)
    tail = last_solid(arr, starts, ends, gap)
    n = max(len(arr) - 1, 0)
    shaped = (
        (head <= tail) & (arr[np.minimum(head, n)] == 0x7B) & (arr[np.clip(tail, 0, n)] == 0x7D)
    )
    inner = first_solid(arr, head + 1, ends, WS)
    empty = shaped & (inner == tail)
    lead = starts if not array else head  # NDJSON keeps its leading blanks, as the line had
    stop = tail + 1 if array else ends - (arr[ends - 1] == 0x0A)
    if not array:
        stop -= (stop > starts) & (arr[np.maximum(stop - 1, 0)] == 0x0D)
    errors = _binary(failed["json"])
    before = _values(block.data, lead, np.where(shaped, tail, lead))
    after = _values(block.data, np.where(shaped, tail, lead), np.where(shaped, stop, lead))
    sep = pa.array([b",", b""], pa.large_binary()).take(pa.array(empty.astype(np.int64)))
    if not shaped.all():  # not an object: wrapped, its text kept as a string (rare: a loop)
        wrapped = [
            json.dumps(block.data[int(h) : int(t) + 1].decode("utf-8", "replace")) if not ok else ""
            for h, t, ok in zip(head.tolist(), tail.tolist(), shaped.tolist(), strict=True)
        ]
        before = pa.array(
            [b.as_py() if ok else b"{" for b, ok in zip(before, shaped.tolist(), strict=True)],
            pa.large_binary(),
        )
        sep = pa.array(
            [s.as_py() if ok else b"" for s, ok in zip(sep, shaped.tolist(), strict=True)],
            pa.large_binary(),
        )
        after = pa.array(
            [
                a.as_py() if ok else f',"_record":{w}}}'.encode()
                for a, ok, w in zip(after, shaped.tolist(), wrapped, strict=True)
            ],
            pa.large_binary(),
        )
    member = f'"{ERRORS}":'
    if array:
        out = _joined([before, sep, member, errors, after, ",\n"])
        out = out[:-2]
        return (b"\n" if first else b",\n") + out
    return _joined([before, sep, member, errors, after, "\n"])


def _not_held() -> FileError:
    return FileError(
        "the stored file does not hold the records the job's error rows name "
        "(it changed since the import?)"
    )


def _csv_header(stream: Iterator[bytes], limit: int) -> tuple[bytes, bytes]:
    """(the header line as it was, what follows it in the data read so far)."""
    framer = CsvFramer()
    buf = bytearray()
    for chunk in stream:
        start = len(buf)
        buf += chunk
        ends = framer.scan(as_array(chunk))
        if len(ends):
            cut = start + int(ends[0])
            return bytes(buf[:cut]), bytes(buf[cut:])
        if len(buf) > limit:
            break
    if not buf.strip() or len(buf) > limit:
        raise MissingColumns("the stored CSV file has no header line")
    return bytes(buf), b""


def _json_start(stream: Iterator[bytes], limit: int) -> tuple[int, bytes]:
    """(bytes up to and including the array's ``[``, what follows it)."""
    size = 0
    for chunk in stream:
        solid = chunk.lstrip()
        size += len(chunk) - len(solid)
        if size > limit:
            break
        if solid:
            if not solid.startswith(b"["):
                break
            return size + 1, solid[1:]
    raise FileError("the stored file is not a JSON array")


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _text(
    stream: Iterator[bytes], fmt: str, failed: _Failed, max_record_bytes: int
) -> Iterator[bytes]:
    framer: Framer
    offset = lines = 0
    columns, eol = 0, "\n"
    if fmt == "csv":
        header, rest = _csv_header(stream, max_record_bytes)
        line = header.rstrip(b"\r\n")
        eol = "\r\n" if header.endswith(b"\r\n") else "\n"
        columns = len(next(iter(_csv_rows(line)), []))
        yield line + f",{ERRORS}{eol}".encode()
        offset, lines, framer = len(header), header.count(b"\n"), CsvFramer()
    elif fmt == "json":
        offset, rest = _json_start(stream, max_record_bytes)
        framer = JsonArrayFramer()
        yield b"["
    else:
        rest, framer = b"", LineFramer()
    row = 1
    first = True
    for block in blocks(
        _chain(rest, stream),
        framer,
        batch_rows=BLOCK_ROWS,
        batch_bytes=BLOCK_BYTES,
        max_record_bytes=max_record_bytes,
        offset=offset,
        lines_before=lines,
        first_index=0,
    ):
        geo = layout(block)
        solid = ~geo.blank
        rows = row + np.cumsum(solid) - 1
        row += int(solid.sum())
        mine = failed.upto(row - 1)
        if mine.height:
            wanted = solid & np.isin(rows, mine["row"].to_numpy())
            idx = np.flatnonzero(wanted)
            if len(idx) != mine.height:
                raise _not_held()
            if fmt == "csv":
                yield _csv_block(block, geo, idx, mine, columns=columns, eol=eol)
            else:
                yield _json_block(block, geo, idx, mine, array=fmt == "json", first=first)
                first = False
        if failed.done:
            break
    if not failed.done:
        raise _not_held()
    if fmt == "json":
        yield b"]\n" if first else b"\n]\n"


def _csv_rows(line: bytes) -> list[list[str]]:
    import csv

    return list(csv.reader(io.StringIO(line.decode("utf-8", "replace"))))


# ---------------------------------------------------------------- Parquet


def _parquet(
    chunks: Iterable[bytes], failed: _Failed, limit: int, batch_bytes: int
) -> Iterator[bytes]:
    sink = io.BytesIO()

    def drained() -> bytes:
        data = sink.getvalue()
        sink.seek(0)
        sink.truncate()
        return data

    with parquet.spool(chunks, limit) as file:
        pf = parquet.open_parquet(file)
        names = [n for n in pf.schema_arrow.names if n != ERRORS]
        item = pa.struct([("field", pa.string()), ("code", pa.string()), ("message", pa.string())])
        schema = pa.schema(
            [pf.schema_arrow.field(n) for n in names] + [pa.field(ERRORS, pa.list_(item))]
        )
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
        rows = parquet.piece_rows(pf, names, BLOCK_ROWS, batch_bytes)
        for at, batch in parquet.record_batches(pf, names, rows):
            mine = failed.upto(at + batch.num_rows)
            if mine.height:
                picked = batch.take(pa.array(mine["row"].to_numpy() - at - 1))
                items = mine["items"].to_arrow().cast(pa.list_(item))
                writer.write_batch(
                    pa.RecordBatch.from_arrays([*picked.columns, items], schema=schema)
                )
                yield drained()
            if failed.done:
                break
        if not failed.done:
            raise _not_held()
        writer.close()
        yield drained()


# ---------------------------------------------------------------- entry point


def rejected_file(
    chunks: Iterable[bytes],
    fmt: str,
    errors: Iterable[pl.DataFrame],
    *,
    max_decompressed_bytes: int,
    max_record_bytes: int,
    batch_bytes: int = BLOCK_BYTES,
) -> Iterator[bytes]:
    """The rejected file's bytes, chunk by chunk: ``chunks`` is the stored upload, ``fmt`` its
    import format (a file starting with PAR1 is Parquet whatever it says, as for the import),
    ``errors`` the job's error rows in row order (:func:`error_batches`)."""
    failed = _Failed(by_row(errors))
    it = iter(chunks)
    head = b""
    for chunk in it:
        head += chunk
        if len(head) >= len(PARQUET_MAGIC):
            break
    if fmt == "parquet" or head.startswith(PARQUET_MAGIC):
        if head.startswith((GZIP_MAGIC, ZSTD_MAGIC)):
            raise compressed_parquet(head)
        yield from _parquet(_chain(head, it), failed, max_decompressed_bytes, batch_bytes)
        return
    stream = iter(decoded(_chain(head, it), max_decompressed_bytes))
    yield from _text(stream, fmt, failed, max_record_bytes)


def rejected_format(fmt: str, head: bytes) -> str:
    """The format a rejected file is written in (see :func:`rejected_file`)."""
    return "parquet" if head.startswith(PARQUET_MAGIC) else fmt
