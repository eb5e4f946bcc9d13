"""Parquet files → frames of text in the shape validation reads, a bounded batch at a time.

**Random access.** A Parquet file is read from its end (the footer holds the schema and where each
column chunk lies), so the stored object is first copied to an anonymous temporary file of the
worker (``TMPDIR``; unlinked at once, so a killed worker leaves nothing behind), at most
``BULKIO_MAX_DECOMPRESSED_BYTES`` of it, with the progress hook called per chunk. A resumed job
copies it again, as a CSV resume reads the bytes before its checkpoint again. (Ranged reads
through obstore would spare the disk but cost one request per column chunk piece on S3.)

**Bounded memory.** pyarrow's ``iter_batches`` decodes a row group page by page, ``rows`` rows at
a time, so a row group larger than memory still streams (1M articles in one 440 MB row group:
a few tens of MB); column chunks are read through a 1 MiB buffer, never whole. ``rows`` comes
from the footer's sizes so that one piece is about an eighth of ``BULKIO_BATCH_BYTES``; pieces are
cut into batches of ``BULKIO_BATCH_ROWS`` rows, fewer when their text passes
``BULKIO_BATCH_BYTES`` (as for text files), and a row whose text passes
``BULKIO_MAX_RECORD_BYTES`` fails the file. The footer's total of uncompressed bytes of the
columns read counts against ``BULKIO_MAX_DECOMPRESSED_BYTES``. Not bounded here: a page is
decompressed whole and a dictionary-encoded value is copied into every row that uses it, so a
crafted file (a page declaring gigabytes, one long value repeated on every row of a row group)
costs what it declares; writers cap pages at ~1 MiB by default.

**Types.** Each column is turned into the text the CSV path reads, by its Arrow type alone:
strings (also dictionary-encoded) as they are, booleans ``true``/``false``, timestamps RFC 3339 in
UTC (naive ones taken as UTC, like naive text), dates ``YYYY-MM-DD``, lists of strings as JSON
arrays, 16-byte binaries (and Arrow's ``uuid``) as UUIDs; all-null columns as nulls. Validation
then applies the same rules as to CSV text, so a value of the wrong kind (a timestamp where an
e-mail goes) is that field's ``invalid_format``. Numbers, binaries, structs, maps and lists of
anything but strings fit no field: such a column of the resource fails the file, naming it.

**Rows and checkpoints.** Rows are numbered from 1 in file order; ``line`` is null. A batch's
checkpoint is the number of rows before its end; a resumed job starts at the row group holding
that row and skips the rows before it, so batches are cut exactly as on the first attempt.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import DecompressedTooLarge, FileError, MissingColumns, RecordTooLarge
from engine.formats import PARQUET_MAGIC
from engine.formats.mapping import FieldMap
from engine.formats.parse import LINE, ROW, shown

Tick = Callable[[], None]
#: Column chunks are read through a buffer of this size (0 would read each chunk whole).
READ_BUFFER = 1024 * 1024
#: Most rows pyarrow decodes at once (fewer for wide rows: see :func:`piece_rows`).
MAX_PIECE_ROWS = 65_536
#: pyarrow decodes about ``BULKIO_BATCH_BYTES / PIECES`` at a time. Its peak is a multiple of
#: that (pages, dictionary, builders), and its allocator (mimalloc) keeps what it freed until
#: asked to give it back, which :func:`record_batches` does after every piece: 300,000 rows of
#: 420 bytes in one row group, 8 MiB batches: +156 MiB RSS with halves kept, +86 MiB with
#: eighths given back.
PIECES = 8
#: A column that is not a field of the resource but carries a rejected file's errors
#: (``GET /v1/imports/{id}/rejected``): ignored on import without a warning.
ERRORS_COLUMN = "_errors"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
#: Names listed in one message; the rest are counted.
_LISTED = 20


def _nothing() -> None:
    return None


def spool(chunks: Iterable[bytes], limit: int, tick: Tick | None = None) -> IO[bytes]:
    """The stored file's bytes in an anonymous temporary file (at most ``limit`` bytes);
    ``tick`` is called per chunk. The caller closes it."""
    tick = tick or _nothing
    out = tempfile.TemporaryFile(prefix="bulkio-parquet-")  # noqa: SIM115 - the caller closes it
    try:
        total = 0
        for chunk in chunks:
            tick()
            total += len(chunk)
            if total > limit:
                raise DecompressedTooLarge(
                    f"the Parquet file is larger than {limit} bytes "
                    "(BULKIO_MAX_DECOMPRESSED_BYTES); split it or raise the limit"
                )
            out.write(chunk)
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out


def open_parquet(file: IO[bytes]) -> pq.ParquetFile:
    """The Parquet file in ``file`` (footer read and checked); FileError if it is not one."""
    file.seek(0, 2)
    size = file.tell()
    file.seek(0)
    head = file.read(4)
    file.seek(max(size - 4, 0))
    tail = file.read(4)
    file.seek(0)
    if head != PARQUET_MAGIC:
        raise FileError(
            "the file is not Parquet: it does not start with PAR1 (pass the right format, "
            "or upload the .parquet file itself, not a compressed copy)"
        )
    if size < 12 or tail != PARQUET_MAGIC:
        raise FileError(
            "the Parquet file is incomplete: it does not end with PAR1 (the upload may have been "
            "cut short)"
        )
    try:
        return pq.ParquetFile(file, buffer_size=READ_BUFFER, pre_buffer=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FileError(f"the Parquet file's footer cannot be read: {exc}") from exc


def _listing(names: Sequence[str]) -> str:
    """Names for a message as the CSV reader lists them: NUL made visible, "" for no name."""
    shown_names = [shown(n) if n else '""' for n in names[:_LISTED]]
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(shown_names) + more


# ---------------------------------------------------------------- schema and text


def _storage(t: pa.DataType) -> pa.DataType:
    return t.storage_type if isinstance(t, pa.BaseExtensionType) else t


def _is_text(t: pa.DataType) -> bool:
    t = _storage(t)
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def readable(t: pa.DataType) -> bool:
    """Can a column of this Arrow type be turned into field text (see the module docstring)?"""
    t = _storage(t)
    if _is_text(t) or pa.types.is_null(t) or pa.types.is_boolean(t):
        return True
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return True
    if pa.types.is_fixed_size_binary(t):
        return bool(t.byte_width == 16)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return _is_text(t.value_type) or pa.types.is_null(t.value_type)
    return False


@dataclass(slots=True)
class Plan:
    """What to read of a file for a resource: the file's columns that feed fields (in file
    order), the field each feeds where its name differs, warnings, and for mode=merge the
    PRESENT bits of the fields the file holds."""

    read: list[str]
    rename: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: field → the file's own name for it, where that differs (error rows use it)
    shown: dict[str, str] = field(default_factory=dict)
    present: int = 0


def plan(
    schema: pa.Schema,
    columns: Sequence[str],
    required: Sequence[str],
    fields: FieldMap | None = None,
    match_keys: Sequence[str] = (),
) -> Plan:
    """Check the file's schema against the resource's columns, read through ``fields`` (a
    mapping, ``header_case``, mode=merge) as the CSV header is; raise FileError naming every
    problem of one kind at once."""
    names = list(schema.names)
    fields = fields or FieldMap(tuple(columns))
    found = f"found: {_listing(names) or '(none)'}"
    resolved = [fields.field_of(n) for n in names]
    by_field: dict[str, list[str]] = {}
    for name, target in zip(names, resolved, strict=True):
        if target is not None:
            by_field.setdefault(target, []).append(name)
    repeated = {t: s for t, s in by_field.items() if len(s) > 1}
    if repeated:
        raise MissingColumns(
            "the Parquet file repeats column(s): "
            + "; ".join(_listing(s) for s in repeated.values())
            + (" (header_case=insensitive)" if fields.insensitive else "")
        )
    missing = [fields.expected(c) for c in required if c not in by_field]
    if missing:
        raise MissingColumns(
            f"the Parquet file lacks required column(s): {', '.join(missing)}; {found}"
        )
    if match_keys and not any(k in by_field for k in match_keys):
        expected = " or ".join(fields.expected(k) for k in match_keys)
        raise MissingColumns(
            f"mode=merge matches records by {' or '.join(match_keys)}: the Parquet file needs a "
            f"column {expected}; {found}"
        )
    wrong = [
        f"{shown(n)} is {schema.field(n).type}"
        for n, target in zip(names, resolved, strict=True)
        if target is not None and not readable(schema.field(n).type)
    ]
    if wrong:
        raise FileError(
            "the Parquet file has column(s) of a type no field takes: "
            + "; ".join(wrong[:_LISTED])
            + " (fields take strings; booleans, timestamps and dates, lists of strings and "
            "16-byte UUIDs are turned into their text)"
        )
    unknown = [
        n
        for n, target in zip(names, resolved, strict=True)
        if target is None and n != ERRORS_COLUMN
    ]
    warnings = [f"ignored unknown column(s): {_listing(unknown)}"] if unknown else []
    keys = {fields.key(n) for n in names}
    absent = [s for s in fields.mapping if fields.key(s) not in keys]
    if absent:
        warnings.append(f"mapped column(s) not in the file: {_listing(absent)}")
    return Plan(
        read=[n for n, target in zip(names, resolved, strict=True) if target is not None],
        rename={n: t for n, t in zip(names, resolved, strict=True) if t is not None and t != n},
        warnings=warnings,
        shown={t: s[0] for t, s in by_field.items() if s[0] != t},
        present=fields.bits(list(by_field)),
    )


def _text(name: str, dtype: pl.DataType) -> pl.Expr:
    """The expression turning column ``name`` of polars type ``dtype`` into field text."""
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            col = col.dt.replace_time_zone("UTC")
        col = col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        return col.dt.to_string(TIMESTAMP_FORMAT)
    if isinstance(dtype, pl.Date):
        return col.dt.to_string("%Y-%m-%d")
    if isinstance(dtype, pl.List):
        # A JSON array per row: json_encode of a one-field struct, without the struct around it.
        encoded = pl.struct(col.cast(pl.List(pl.String)).alias("v")).struct.json_encode()
        return pl.when(col.is_null()).then(None).otherwise(encoded.str.slice(5).str.head(-1))
    if isinstance(dtype, pl.Binary):  # 16 bytes: a UUID
        hexed = col.bin.encode("hex")
        parts = [hexed.str.slice(a, b - a) for a, b in ((0, 8), (8, 12), (12, 16), (16, 20))]
        return pl.concat_str([*parts, hexed.str.slice(20)], separator="-")
    return col.cast(pl.String)


def as_text(
    batch: pa.RecordBatch, columns: Sequence[str], rename: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """The resource's ``columns`` of ``batch`` as text (absent ones null), in that order; the
    batch's columns named by ``rename`` (file column → field) feed those fields."""
    arrays = []
    for array, fld in zip(batch.columns, batch.schema, strict=True):
        if isinstance(fld.type, pa.BaseExtensionType):
            array = array.storage
        arrays.append(array)
    names = [(rename or {}).get(n, n) for n in batch.schema.names]
    frame = pl.from_arrow(pa.RecordBatch.from_arrays(arrays, names=names))
    assert isinstance(frame, pl.DataFrame)
    present = dict(frame.schema)
    return frame.select(
        [
            _text(c, present[c]).alias(c) if c in present else pl.lit(None, pl.String).alias(c)
            for c in columns
        ]
    )


def text_bytes(frame: pl.DataFrame) -> np.ndarray:
    """Bytes of text per row (what a batch of them holds), int64."""
    if not frame.width:
        return np.zeros(frame.height, dtype=np.int64)
    sizes = frame.select(
        pl.sum_horizontal(pl.all().str.len_bytes().fill_null(0).cast(pl.Int64))
    ).to_series()
    return sizes.to_numpy().astype(np.int64, copy=False)


# ---------------------------------------------------------------- reading


def piece_rows(pf: pq.ParquetFile, read: Sequence[str], batch_rows: int, batch_bytes: int) -> int:
    """Rows pyarrow decodes at once: about ``batch_bytes / PIECES`` by the footer's sizes (the
    widest row group counts), at most ``batch_rows`` and ``MAX_PIECE_ROWS``."""
    meta = pf.metadata
    wanted = set(read)
    widest = 1.0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if not group.num_rows:
            continue
        size = sum(
            group.column(j).total_uncompressed_size
            for j in range(group.num_columns)
            if group.column(j).path_in_schema.split(".")[0] in wanted
        )
        widest = max(widest, size / group.num_rows)
    return int(max(1, min(batch_rows, MAX_PIECE_ROWS, batch_bytes // (PIECES * widest))))


def declared_bytes(pf: pq.ParquetFile, read: Sequence[str]) -> int:
    """Uncompressed bytes the footer declares for the columns ``read``."""
    meta = pf.metadata
    wanted = set(read)
    return sum(
        meta.row_group(g).column(j).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for j in range(meta.row_group(g).num_columns)
        if meta.row_group(g).column(j).path_in_schema.split(".")[0] in wanted
    )


def record_batches(
    pf: pq.ParquetFile,
    columns: Sequence[str] | None,
    rows: int,
    start: int = 0,
    tick: Tick | None = None,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(rows before it, batch) from row ``start`` (0-based) on, ``rows`` rows at most per batch:
    reading starts at the row group holding ``start`` and drops the rows before it."""
    tick = tick or _nothing
    meta = pf.metadata
    first_group, before = 0, 0
    while first_group < meta.num_row_groups:
        n = meta.row_group(first_group).num_rows
        if before + n > start:
            break
        before += n
        first_group += 1
    if first_group >= meta.num_row_groups:
        return
    batches = pf.iter_batches(
        batch_size=rows,
        row_groups=range(first_group, meta.num_row_groups),
        columns=list(columns) if columns is not None else None,
    )
    at = before
    pool = pa.default_memory_pool()
    while True:
        pool.release_unused()
        tick()
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise FileError(f"the Parquet file cannot be read after row {at}: {exc}") from exc
        if batch is None:
            return
        end = at + batch.num_rows
        if end > start:
            skip = max(start - at, 0)
            yield at + skip, batch.slice(skip) if skip else batch
        at = end


@dataclass(frozen=True, slots=True)
class Piece:
    """One batch of text rows: ``frame`` (the columns, then ``__row`` and ``__line``) and the
    number of rows before its end."""

    frame: pl.DataFrame
    end: int


def text_batches(
    pf: pq.ParquetFile,
    chosen: Plan,
    columns: Sequence[str],
    *,
    start: int,
    batch_rows: int,
    batch_bytes: int,
    max_record_bytes: int,
    tick: Tick | None = None,
) -> Iterator[Piece]:
    """Batches of ``batch_rows`` rows, fewer when their text passes ``batch_bytes``, from row
    ``start`` (0-based) on. The cut depends only on the rows from ``start``: a resumed job cuts
    the batches the first attempt did."""
    rows = piece_rows(pf, chosen.read, batch_rows, batch_bytes)
    held: list[pl.DataFrame] = []
    held_rows = held_bytes = 0
    for at, batch in record_batches(pf, chosen.read, rows, start, tick):
        frame = as_text(batch, columns, chosen.rename)
        sizes = text_bytes(frame)
        too_big = np.flatnonzero(sizes > max_record_bytes)
        if len(too_big):
            raise RecordTooLarge(
                f"row {at + int(too_big[0]) + 1} of the Parquet file holds "
                f"{int(sizes[too_big[0]])} bytes of text, more than {max_record_bytes} "
                "(BULKIO_MAX_RECORD_BYTES)"
            )
        first = at + 1
        while frame.height:
            room = batch_rows - held_rows
            fitting = int(np.searchsorted(np.cumsum(sizes), batch_bytes - held_bytes, "right"))
            take = min(room, fitting)
            if take == 0 and not held:
                take = 1  # a batch holds at least one row
            if take >= frame.height and held_rows + frame.height < batch_rows:
                held.append(_numbered(frame, first))
                held_rows += frame.height
                held_bytes += int(sizes.sum())
                break
            held.append(_numbered(frame.head(take), first))
            out = pl.concat(held) if len(held) > 1 else held[0]
            yield Piece(out, first + take - 1)
            frame, sizes, first = frame.slice(take), sizes[take:], first + take
            held, held_rows, held_bytes = [], 0, 0
    if held:
        out = pl.concat(held) if len(held) > 1 else held[0]
        yield Piece(out, int(out[ROW][-1]))


def _numbered(frame: pl.DataFrame, first: int) -> pl.DataFrame:
    return frame.with_columns(
        pl.int_range(first, first + frame.height, dtype=pl.Int64).alias(ROW),
        pl.lit(None, dtype=pl.Int64).alias(LINE),
    )
