"""The reading loop: a stream of file bytes → batches of validated-shape polars frames.

``read_batches`` is the single entry point: it decodes (gzip, zstd, BOM), checks UTF-8, frames
whole records (``framing``), and parses each block (``parse``); a Parquet file (declared, or
starting with ``PAR1`` whatever its declared format) is read by ``parquet`` instead. Every batch
knows the position right after it, which the loader stores as the job's checkpoint;
``read_batches(start=...)`` resumes there.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import polars as pl

from engine.checks import utf8_error_offset
from engine.error_rows import empty_errors
from engine.errors import (
    DecompressedTooLarge,
    FileError,
    InvalidEncoding,
    MissingColumns,
    RecordTooLarge,
    UnsupportedFormat,
)
from engine.formats import PARQUET_MAGIC, parquet
from engine.formats.decode import GZIP_MAGIC, ZSTD_MAGIC, Tick, compressed_parquet, decoded
from engine.formats.framing import (
    Block,
    CsvFramer,
    Framer,
    JsonArrayFramer,
    LineFramer,
    as_array,
    blocks,
)
from engine.formats.mapping import PRESENT, FieldMap
from engine.formats.parse import (
    LINE,
    MAX_FIELDS,
    ROW,
    Parsed,
    json_keys,
    parse_csv,
    parse_json_lines,
    shown,
)

#: Why a file without a single record fails (a job that "succeeds" with nothing hides mistakes).
_NO_RECORDS = {
    "csv": "the CSV file has a header but no records",
    "ndjson": "the file holds no records: it is empty or has only blank lines",
    "json": "the JSON array is empty: the file holds no records",
    "parquet": "the Parquet file holds no records",
}
#: Names listed in one message or warning; the rest are counted.
_LISTED = 20

__all__ = ["LINE", "ROW", "Batch", "Header", "Position", "read_batches"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading (re)starts: batch index, decoded byte offset (Parquet: rows before), next
    row number, lines before."""

    batch: int = 0
    offset: int = 0
    row: int = 1
    lines: int = 0


@dataclass(frozen=True, slots=True)
class Batch:
    index: int
    frame: pl.DataFrame
    errors: pl.DataFrame
    rows: int
    #: position right after this batch (the checkpoint to store when it commits)
    after: Position
    #: decoded bytes consumed up to the end of this batch
    bytes_end: int


@dataclass(slots=True)
class Header:
    names: list[str]
    #: CSV: the header line (parsed again with every block); JSON: ``[``
    raw: bytes
    #: decoded bytes before the first record
    length: int
    warnings: list[str] = field(default_factory=list)
    #: newlines before the first record
    lines: int = 0
    #: CSV read through a FieldMap: the name the parser gives each column (a field, or a name
    #: that is none), else None (the names themselves)
    fields: list[str] | None = None
    #: field → the file's own name for it, where that differs (error rows use it)
    shown: dict[str, str] = field(default_factory=dict)
    #: mode=merge, CSV: the PRESENT bits of the fields the header holds
    present: int = 0


class _Stream:
    """An iterator of bytes with push-back, so the header can be peeled off the front."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._head: list[bytes] = []

    def __iter__(self) -> Iterator[bytes]:
        while self._head:
            yield self._head.pop()
        yield from self._it

    def next(self) -> bytes:
        if self._head:
            return self._head.pop()
        return next(self._it, b"")

    def push(self, data: bytes) -> None:
        if data:
            self._head.append(data)

    def skip(self, n: int) -> None:
        while n > 0:
            chunk = self.next()
            if not chunk:
                raise FileError("the stored file is shorter than the job's checkpoint")
            if len(chunk) > n:
                self.push(chunk[n:])
                return
            n -= len(chunk)


def _listing(names: Sequence[str]) -> str:
    """Names for a message: NUL made visible, an empty name shown as "", at most _LISTED."""
    shown_names = [shown(n) if n else '""' for n in names[:_LISTED]]
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(shown_names) + more


def _first_record(stream: _Stream, framer: CsvFramer, limit: int) -> bytes:
    buf = bytearray()  # appended in place: gzip may hand on many small pieces
    while True:
        chunk = stream.next()
        if not chunk:
            if framer.in_quotes:
                raise FileError("the CSV header ends inside a quoted field (an unbalanced quote)")
            return bytes(buf)
        start = len(buf)
        buf += chunk
        ends = framer.scan(as_array(chunk))
        cut = start + int(ends[0]) if len(ends) else len(buf) + 1
        if cut - 1 > limit:  # checked whether or not the line ended in this chunk
            raise MissingColumns(
                f"the CSV header line is longer than the record limit ({limit} bytes, "
                "BULKIO_MAX_RECORD_BYTES)"
            )
        if len(ends):
            stream.push(bytes(buf[cut:]))
            return bytes(buf[:cut])


def _csv_header(
    stream: _Stream,
    columns: Sequence[str],
    required: Sequence[str],
    limit: int,
    fields: FieldMap | None = None,
    match_keys: Sequence[str] = (),
) -> Header:
    raw = _first_record(stream, CsvFramer(), limit)
    if not raw.strip():
        raise MissingColumns("the file is empty: a CSV file needs a header row naming its columns")
    _check_utf8(raw, 0, 0)
    if b"\r" in raw.rstrip(b"\r\n"):
        # Records end with LF or CRLF; a lone CR elsewhere is data. In a header it means the
        # file uses CR-only line endings (classic Mac), which would make the whole file one line.
        raise FileError(
            "the CSV header line holds a carriage return (CR) that is not followed by a line feed: "
            "the file seems to use CR-only line endings; re-save it with LF or CRLF line endings"
        )
    try:
        names = [n.strip() for n in next(csv.reader(io.StringIO(raw.decode("utf-8"))))]
    except csv.Error as exc:
        raise FileError(f"the CSV header line cannot be read: {exc}") from exc
    if len(names) > MAX_FIELDS:
        raise FileError(
            f"the CSV header has {len(names)} columns; at most {MAX_FIELDS} are accepted"
        )
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dupes:
        raise MissingColumns(f"the CSV header repeats column(s): {_listing(dupes)}")
    if fields is not None:
        return _mapped_header(names, raw, fields, required, match_keys)
    missing = [c for c in required if c not in names]
    if missing:
        raise MissingColumns(
            f"the CSV header lacks required column(s): {', '.join(missing)}; "
            f"found: {_listing(names) or '(none)'}"
        )
    unknown = [n for n in names if n not in columns and n != parquet.ERRORS_COLUMN]
    warnings = [f"ignored unknown column(s): {_listing(unknown)}"] if unknown else []
    header_line = raw if raw.endswith(b"\n") else raw + b"\n"
    return Header(names, header_line, len(raw), warnings, raw.count(b"\n"))


def _mapped_header(
    names: list[str],
    raw: bytes,
    fields: FieldMap,
    required: Sequence[str],
    match_keys: Sequence[str],
) -> Header:
    """A CSV header read through ``fields`` (a mapping, ``header_case``, mode=merge): which
    field each column feeds. Messages name columns as the file (or the mapping) spells them."""
    found = f"found: {_listing(names) or '(none)'}"
    resolved = [fields.field_of(n) for n in names]
    by_field: dict[str, list[str]] = {}
    for name, target in zip(names, resolved, strict=True):
        if target is not None:
            by_field.setdefault(target, []).append(name)
    for target, sources in by_field.items():
        if len(sources) > 1:
            raise MissingColumns(
                f"the CSV header has columns {_listing(sources)}, which all name {target} "
                "(header_case=insensitive): keep one"
            )
    missing = [fields.expected(c) for c in required if c not in by_field]
    if missing:
        raise MissingColumns(
            f"the CSV header lacks required column(s): {', '.join(missing)}; {found}"
        )
    if match_keys and not any(k in by_field for k in match_keys):
        expected = " or ".join(fields.expected(k) for k in match_keys)
        raise MissingColumns(
            f"mode=merge matches records by {' or '.join(match_keys)}: the CSV header needs a "
            f"column {expected}; {found}"
        )
    unknown = [
        n
        for n, target in zip(names, resolved, strict=True)
        if target is None and n != parquet.ERRORS_COLUMN
    ]
    warnings = [f"ignored unknown column(s): {_listing(unknown)}"] if unknown else []
    keys = {fields.key(n) for n in names}
    absent = [s for s in fields.mapping if fields.key(s) not in keys]
    if absent:
        warnings.append(f"mapped column(s) not in the file: {_listing(absent)}")
    header_line = raw if raw.endswith(b"\n") else raw + b"\n"
    return Header(
        names,
        header_line,
        len(raw),
        warnings,
        raw.count(b"\n"),
        fields=[t or f"__unread_{i}" for i, t in enumerate(resolved)],
        shown={t: s[0] for t, s in by_field.items() if s[0] != t},
        present=fields.bits(list(by_field)),
    )


def _json_blank(chunk: bytes) -> int:
    """How many bytes of JSON whitespace (space, tab, CR, LF) start ``chunk``.

    ``bytes.lstrip()`` without arguments is ~6x faster than with a set of bytes; it also takes
    \x0b and \x0c, which JSON does not, so the run is cut at the first of those."""
    lead = len(chunk) - len(chunk.lstrip())
    for other in (b"\x0b", b"\x0c"):
        at = chunk.find(other, 0, lead)
        if at >= 0:
            lead = at
    return lead


def _json_header(stream: _Stream, limit: int) -> Header:
    """Everything up to the array's ``[``: at most ``limit`` bytes of whitespace, then ``[``.
    The whitespace is capped like a record and counted, never kept (it was kept without a
    limit: 1 MB of gzip held a worker at 2.7 GiB)."""
    size = newlines = 0
    while True:
        chunk = stream.next()
        if not chunk:
            raise FileError("the file is empty: a JSON file must hold an array of objects")
        lead = _json_blank(chunk)
        solid = chunk[lead:]
        size += lead
        newlines += chunk.count(b"\n", 0, lead)
        if size > limit:
            raise RecordTooLarge(
                f"the JSON file starts with more than {limit} bytes of whitespace before its "
                "opening '[' (BULKIO_MAX_RECORD_BYTES): remove them or raise the limit"
            )
        if solid:
            break
    if not solid.startswith(b"["):
        raise FileError(
            "a JSON file must hold one array of objects ([{...}, {...}]); "
            f"this one starts with {solid[:20].decode('utf-8', 'replace')!r} "
            "(for one object per line use format=ndjson)"
        )
    stream.push(solid[1:])
    return Header([], b"[", size + 1, lines=newlines)


def _check_utf8(data: bytes, offset: int, lines_before: int) -> None:
    if utf8_error_offset(data) is None:  # the common case, without building a str
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lines_before + data.count(b"\n", 0, exc.start) + 1
        if offset == 0 and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise InvalidEncoding(
                "the file is not UTF-8: it starts with a UTF-16 (or UTF-32) byte-order mark; "
                "re-save it as UTF-8"
            ) from exc
        raise InvalidEncoding(
            f"the file is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset "
            f"{offset + exc.start} (line {line}); re-save it as UTF-8"
        ) from exc


def read_batches(
    chunks: Iterable[bytes],
    fmt: str,
    columns: Sequence[str],
    required: Sequence[str],
    *,
    batch_rows: int,
    max_record_bytes: int,
    max_decompressed_bytes: int,
    start: Position | None = None,
    header_out: list[Header] | None = None,
    batch_bytes: int = 1 << 62,
    on_progress: Tick | None = None,
    fields: FieldMap | None = None,
    match_keys: Sequence[str] = (),
) -> Iterator[Batch]:
    """Yield batches of ``batch_rows`` records (fewer when they pass ``batch_bytes`` decoded
    bytes) from ``start`` (default: the beginning).

    ``on_progress`` is called for every chunk of ``chunks`` read and every few decompression
    steps (``engine.formats.decode``), also while no batch comes out (a long run of empty gzip
    members, skipping to a checkpoint); it may raise to stop reading.

    ``fields`` (None: columns are fields by their own names) maps columns or keys to fields
    (``engine.formats.mapping``); with ``fields.presence`` (mode=merge) every frame gets a
    ``PRESENT`` column, and ``match_keys`` are the columns of which a CSV header needs one (in
    place of ``required``)."""
    raw = _Stream(chunks)
    head = _peek(raw, len(PARQUET_MAGIC))
    if fmt == "parquet" or head.startswith(PARQUET_MAGIC):
        if head.startswith((GZIP_MAGIC, ZSTD_MAGIC)):
            raise compressed_parquet(head)
        yield from _read_parquet(
            raw,
            columns,
            required,
            batch_rows=batch_rows,
            batch_bytes=batch_bytes,
            max_record_bytes=max_record_bytes,
            max_bytes=max_decompressed_bytes,
            start=start or Position(),
            header_out=header_out,
            tick=on_progress,
            fields=fields,
            match_keys=match_keys,
        )
        return
    stream = _Stream(decoded(raw, max_decompressed_bytes, on_progress))
    framer: Framer
    if fmt == "csv":
        header = _csv_header(stream, columns, required, max_record_bytes, fields, match_keys)
        framer = CsvFramer()
    elif fmt == "json":
        header = _json_header(stream, max_record_bytes)
        framer = JsonArrayFramer()
    elif fmt == "ndjson":
        header = Header([], b"", 0)
        framer = LineFramer()
    else:
        raise UnsupportedFormat(f"unknown format {fmt!r}")
    if fields is not None and fmt != "csv":
        header.shown = fields.shown()
    if header_out is not None:
        header_out.append(header)
    header_lines = header.lines
    pos = start or Position(0, header.length, 1, header_lines)
    if pos.offset < header.length:
        pos = Position(pos.batch, header.length, pos.row, header_lines)
    stream.skip(pos.offset - header.length)
    row = pos.row
    from_start = pos.batch == 0
    for block in blocks(
        iter(stream),
        framer,
        batch_rows=batch_rows,
        max_record_bytes=max_record_bytes,
        offset=pos.offset,
        lines_before=pos.lines,
        first_index=pos.batch,
        batch_bytes=batch_bytes,
    ):
        _check_utf8(block.data, block.offset, block.lines_before)
        parsed = _parse(block, fmt, header, columns, row, fields)
        if fmt != "csv" and from_start and block.index == 0:
            if fields is None:
                _warn_unknown_keys(header, block, fmt, columns)
            else:
                _warn_unread_keys(header, block, fmt, fields)
        row += parsed.rows
        end = block.offset + len(block.data)
        after = Position(block.index + 1, end, row, block.lines_before + block.data.count(b"\n"))
        yield Batch(block.index, parsed.frame, parsed.errors, parsed.rows, after, end)
    if from_start and row == pos.row:
        raise FileError(_NO_RECORDS[fmt])


def _peek(stream: _Stream, n: int) -> bytes:
    """The first ``n`` bytes of ``stream`` (fewer if it is shorter), left in it."""
    head = b""
    while len(head) < n:
        chunk = stream.next()
        if not chunk:
            break
        head += chunk
    stream.push(head)
    return head[:n]


def _read_parquet(
    raw: _Stream,
    columns: Sequence[str],
    required: Sequence[str],
    *,
    batch_rows: int,
    batch_bytes: int,
    max_record_bytes: int,
    max_bytes: int,
    start: Position,
    header_out: list[Header] | None,
    tick: Tick | None,
    fields: FieldMap | None,
    match_keys: Sequence[str],
) -> Iterator[Batch]:
    """A Parquet file's batches (``engine.formats.parquet``); the offset of a position is the
    number of rows before it. Columns are read through ``fields`` as a CSV header is."""
    with parquet.spool(raw, max_bytes, tick) as file:
        size = file.seek(0, 2)
        pf = parquet.open_parquet(file)
        plan = parquet.plan(pf.schema_arrow, columns, required, fields, match_keys)
        declared = parquet.declared_bytes(pf, plan.read)
        if declared > max_bytes:
            raise DecompressedTooLarge(
                f"the Parquet file's columns expand to {declared} bytes, more than {max_bytes} "
                "(BULKIO_MAX_DECOMPRESSED_BYTES); split it or raise the limit"
            )
        if header_out is not None:
            names = list(pf.schema_arrow.names)
            header = Header(names, b"", 0, plan.warnings, shown=plan.shown, present=plan.present)
            header_out.append(header)
        present = pl.lit(plan.present, dtype=pl.Int64).alias(PRESENT)
        total = pf.metadata.num_rows
        if total == 0:
            raise FileError(_NO_RECORDS["parquet"])
        index = start.batch
        for piece in parquet.text_batches(
            pf,
            plan,
            columns,
            start=start.offset,
            batch_rows=batch_rows,
            batch_bytes=batch_bytes,
            max_record_bytes=max_record_bytes,
            tick=tick,
        ):
            frame = piece.frame
            if fields is not None and fields.presence:
                frame = frame.with_columns(present)
            after = Position(index + 1, piece.end, piece.end + 1, 0)
            end = size * piece.end // total
            yield Batch(index, frame, empty_errors(), frame.height, after, end)
            index += 1


def _warn_unknown_keys(header: Header, block: Block, fmt: str, columns: Sequence[str]) -> None:
    """JSON keys that are not columns are ignored; say so once, like CSV's unknown columns. Only
    the first batch is sampled (``KEY_SAMPLE`` records): the warning is set when it commits."""
    unknown = sorted(json_keys(block, array=fmt == "json") - set(columns) - {parquet.ERRORS_COLUMN})
    if unknown:
        header.warnings.append(f"ignored unknown key(s): {_listing(unknown)}")


def _warn_unread_keys(header: Header, block: Block, fmt: str, fields: FieldMap) -> None:
    """:func:`_warn_unknown_keys` for keys read through a FieldMap."""
    unknown = sorted(
        k
        for k in json_keys(block, array=fmt == "json")
        if fields.field_of(k) is None and k != parquet.ERRORS_COLUMN
    )
    if unknown:
        header.warnings.append(f"ignored unknown key(s): {_listing(unknown)}")


def _parse(
    block: Block,
    fmt: str,
    header: Header,
    columns: Sequence[str],
    row: int,
    fields: FieldMap | None = None,
) -> Parsed:
    if fmt != "csv":
        return parse_json_lines(block, columns, row, array=fmt == "json", fields=fields)
    parsed = parse_csv(block, header.raw, header.fields or header.names, columns, row)
    if fields is None or not fields.presence:
        return parsed
    present = pl.lit(header.present, dtype=pl.Int64).alias(PRESENT)
    return Parsed(parsed.frame.with_columns(present), parsed.errors, parsed.rows)
