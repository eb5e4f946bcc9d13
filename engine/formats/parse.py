"""Parse one block of whole records into a polars frame of strings, isolating malformed records.

Output columns are exactly the resource's columns (String; absent ones are null), for JSON the
text of each record (``json_types.RECORD``: validation looks up JSON types there), then
``__row`` and ``__line``. Malformed records become error rows and do not reach validation.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from engine.error_rows import empty_errors, malformed
from engine.formats.framing import (
    NL,
    QUOTE,
    WS,
    Block,
    as_array,
    nesting,
    parity_at,
    real_quotes,
    running_parity,
)
from engine.formats.json_types import with_records
from engine.formats.keys import fold_keys, holding
from engine.formats.mapping import PRESENT, FieldMap
from engine.formats.records import Layout, first_solid, last_solid, layout

ROW = "__row"
LINE = "__line"

#: Deepest nesting of arrays/objects in one JSON record; a deeper record is an error row (parsers
#: recurse per level, so unbounded nesting is a stack-exhaustion attack).
MAX_JSON_DEPTH = 64
#: Most fields of a CSV header (more fails the file) or members of one JSON object (more is an
#: error row).
MAX_FIELDS = 1024
#: Records of the first batch whose JSON keys are looked at to report unknown keys once.
KEY_SAMPLE = 1000
#: Shown instead of a NUL byte in echoed values: PostgreSQL text cannot hold ``\x00``.
NUL_SHOWN = "\u2400"
#: What a parser may raise on a record it cannot read: a polars error, or a Rust panic
#: (``PanicException`` derives from BaseException, so ``except Exception`` would let it through).
PARSE_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException)
_CSV_QUOTE_MESSAGE = (
    'a quote (") inside an unquoted field or after a closing quote: enclose the whole field in '
    'quotes and double each quote inside it ("")'
)


@dataclass(frozen=True, slots=True)
class Parsed:
    frame: pl.DataFrame
    errors: pl.DataFrame
    #: rows (non-blank records) in this block, malformed ones included
    rows: int


#: Bytes around a JSON record that are not part of it: whitespace and the array's commas.
_JSON_GAP = WS.copy()
_JSON_GAP[0x2C] = True


def _numbered(frame: pl.DataFrame, rows: np.ndarray, lines: np.ndarray) -> pl.DataFrame:
    return frame.with_columns(
        pl.Series(ROW, rows, dtype=pl.Int64), pl.Series(LINE, lines, dtype=pl.Int64)
    )


def _conform(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    present = set(frame.columns)
    return frame.select(
        [
            pl.col(c).cast(pl.String) if c in present else pl.lit(None, dtype=pl.String).alias(c)
            for c in columns
        ]
    )


def _empty(columns: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame(schema={**{c: pl.String for c in columns}, ROW: pl.Int64, LINE: pl.Int64})


def _concat_ranges(data: bytes, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """Join byte ranges; callers pass few ranges (runs of good records), never one per record."""
    view = memoryview(data)
    return b"".join(view[int(s) : int(e)] for s, e in zip(starts, ends, strict=True))


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start/stop indices of the runs of True in ``mask``."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    diff = np.diff(padded)
    return np.flatnonzero(diff == 1), np.flatnonzero(diff == -1)


def _good_bytes(data: bytes, geo: Layout, good: np.ndarray) -> bytes:
    run_starts, run_stops = _runs(good)
    return _concat_ranges(data, geo.starts[run_starts], geo.ends[run_stops - 1])


#: Runs of records joined one by one; more runs (good and bad records interleaved) are gathered
#: through one byte mask.
_JOINED_RUNS = 64


def _subset_bytes(data: bytes, geo: Layout, idx: np.ndarray) -> bytes:
    """Bytes of records ``idx`` (ascending), in file order, with work in proportion to the bytes
    they span, not to the block (bisection asks for many small subsets)."""
    if not len(idx):
        return b""
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = geo.starts[idx[np.concatenate(([0], breaks + 1))]]
    ends = geo.ends[idx[np.concatenate((breaks, [len(idx) - 1]))]]
    if len(starts) <= _JOINED_RUNS:
        return _concat_ranges(data, starts, ends)
    first = int(starts[0])
    edges = np.zeros(int(ends[-1]) - first + 1, dtype=np.int8)
    edges[starts - first] = 1
    edges[ends - first] -= 1
    keep = np.cumsum(edges[:-1], dtype=np.int8).view(bool)
    return as_array(data)[first : int(ends[-1])][keep].tobytes()


def _isolate(
    parse: Callable[[np.ndarray], pl.DataFrame], idx: np.ndarray
) -> tuple[list[pl.DataFrame], list[int]]:
    """Parse records ``idx`` at once; when the parser fails or disagrees on the number of rows,
    bisect to find the records it cannot read. Returns (frames in order, bad record indices).

    Bisection costs two parser calls per bad record: fine for the rare records that pass every
    vectorised pre-check and still fail (JSON has :func:`_isolate_json` in front of it)."""
    frames: list[tuple[int, pl.DataFrame]] = []
    bad: list[int] = []
    stack = [(0, len(idx))]
    while stack:
        lo, hi = stack.pop()
        try:
            frame = parse(idx[lo:hi])
            ok = frame.height == hi - lo
        except PARSE_ERRORS:
            ok = False
        if ok:
            frames.append((lo, frame))
        elif hi - lo == 1:
            bad.append(int(idx[lo]))
        else:
            mid = (lo + hi) // 2
            stack.append((mid, hi))
            stack.append((lo, mid))
    return [f for _, f in sorted(frames, key=lambda t: t[0])], bad


def _record_texts(data: bytes, geo: Layout, idx: np.ndarray) -> pl.Series:
    """Records ``idx`` as strings (``data`` is valid UTF-8 and records end on ASCII bytes),
    gathered from an Arrow string array over the block's own buffer: no Python per record."""
    offsets = np.concatenate(([0], geo.ends)).astype(np.int64)
    records = pa.LargeStringArray.from_buffers(
        len(geo.ends), pa.py_buffer(offsets), pa.py_buffer(data)
    )
    return pl.Series(records.take(pa.array(idx, type=pa.int64())))


def _json_valid(data: bytes, geo: Layout, idx: np.ndarray) -> np.ndarray:
    """Per record of ``idx``: is it one well-formed JSON value? One vectorised pass (polars'
    ``json_path_match``, serde_json in Rust) over the records as strings on the block's own
    buffer. It agrees with the NDJSON reader on every record we tried (fuzzed), but for lone
    UTF-16 surrogate escapes (``"\\ud800"``), which the reader turns into NUL and this check
    refuses: such a record is an error row either way (validation refuses NUL)."""
    return _record_texts(data, geo, idx).str.json_path_match("$").is_not_null().to_numpy()


def _isolate_json(
    parse: Callable[[np.ndarray], pl.DataFrame], data: bytes, geo: Layout, idx: np.ndarray
) -> tuple[list[pl.DataFrame], list[int]]:
    """Like :func:`_isolate`, for JSON records: a clean block is parsed once, as before; when
    that fails, one vectorised check finds the malformed records, and the others are parsed once
    (bisection stays as the fallback should the parser refuse a record the check accepts).
    Bisecting alone cost two parser calls per malformed record: a file of nothing but
    malformed lines ran ~30x slower than a clean one."""
    try:
        frame = parse(idx)
        if frame.height == len(idx):
            return [frame], []
    except PARSE_ERRORS:
        pass
    valid = _json_valid(data, geo, idx)
    frames, bad = _isolate(parse, idx[valid]) if valid.any() else ([], [])
    return frames, sorted(bad + idx[~valid].tolist())


def _count_per_record(mask: np.ndarray, geo: Layout) -> np.ndarray:
    """How many bytes of each record ``[start, end)`` ``mask`` selects.

    Binary search over the (sparse) selected positions: half the time of ``np.add.reduceat``,
    which widened the whole mask to int64 first (py-spy: 1.5 s of a 1M-article import)."""
    hits = np.flatnonzero(mask)
    return np.searchsorted(hits, geo.ends) - np.searchsorted(hits, geo.starts)


def shown(value: str) -> str:
    """``value`` safe to store as PostgreSQL text and to echo (NUL made visible)."""
    return value.replace("\x00", NUL_SHOWN)


# ---------------------------------------------------------------- CSV


def csv_fields_per_record(block: Block, geo: Layout) -> np.ndarray:
    """Number of fields of each record: commas outside quotes, plus one."""
    arr = as_array(block.data)
    commas = np.flatnonzero(arr == 0x2C)
    commas = commas[~parity_at(np.flatnonzero(arr == QUOTE), commas)]
    owner = np.searchsorted(geo.ends, commas, side="right")
    return np.bincount(owner, minlength=len(geo.ends))[: len(geo.ends)] + 1


def csv_stray_quotes(block: Block, geo: Layout) -> np.ndarray:
    """Per record: does it hold a quote RFC 4180 does not allow?

    Framing counts every ``"`` (records start outside quotes, so the k-th quote of a block opens
    a quoted field when k is odd). An opening quote must start a field (after ``,``, a newline,
    or the closing quote of a doubled ``""``); a closing quote must end one (before ``,``, a
    newline, CRLF, the end, or a doubled ``""``). Anything else — ``ab"c`` or ``"ab"c`` — is read
    differently by every CSV parser, so such a record is an error row, never guessed at.
    """
    arr = as_array(block.data)
    quotes = np.flatnonzero(arr == QUOTE)
    stray = np.zeros(len(geo.ends), dtype=bool)
    if not len(quotes):
        return stray
    n = len(arr)
    opening = (np.arange(len(quotes)) & 1) == 0
    prev = np.where(quotes > 0, arr[np.maximum(quotes - 1, 0)], NL)
    at_record_start = np.isin(quotes, geo.starts)
    ok_open = at_record_start | (prev == 0x2C) | (prev == NL) | (prev == QUOTE)
    nxt = np.where(quotes + 1 < n, arr[np.minimum(quotes + 1, n - 1)], NL)
    after = np.where(quotes + 2 < n, arr[np.minimum(quotes + 2, n - 1)], NL)
    ok_close = (nxt == 0x2C) | (nxt == NL) | (nxt == QUOTE) | ((nxt == 0x0D) & (after == NL))
    bad = np.where(opening, ~ok_open, ~ok_close)
    owner = np.searchsorted(geo.ends, quotes[bad], side="right")
    stray[owner[owner < len(stray)]] = True
    return stray


def _records(data: bytes, geo: Layout, idx: np.ndarray) -> list[bytes]:
    """The bytes of a few records (error rows only: one Python object per record)."""
    view = memoryview(data)
    return [bytes(view[int(geo.starts[i]) : int(geo.ends[i])]) for i in idx.tolist()]


def _bare_cr(record: bytes) -> str:
    """A hint for a ragged record whose lines end with a lone CR (read as data, not a break)."""
    if b"\r" in record.rstrip(b"\r\n").replace(b"\r\n", b""):
        return " (it holds a carriage return (CR) without a line feed: records end with LF or CRLF)"
    return ""


def _read_csv(header: bytes, body: bytes, names: Sequence[str]) -> pl.DataFrame:
    if not body.endswith(b"\n"):
        body += b"\n"
    return pl.read_csv(
        io.BytesIO(header + body),
        has_header=True,
        new_columns=list(names),
        infer_schema=False,
        quote_char='"',
        raise_if_empty=False,
        truncate_ragged_lines=False,
    )


def parse_csv(
    block: Block, header: bytes, names: Sequence[str], columns: Sequence[str], first_row: int
) -> Parsed:
    geo = layout(block)
    solid = ~geo.blank
    rows = first_row + np.cumsum(solid) - 1
    fields = csv_fields_per_record(block, geo)
    stray = solid & csv_stray_quotes(block, geo)
    ragged = solid & ~stray & (fields != len(names))
    good = solid & ~stray & ~ragged
    frames: list[pl.DataFrame] = []
    unreadable: list[int] = []
    if good.any():
        frames, unreadable = _isolate(
            lambda idx: _read_csv(header, _subset_bytes(block.data, geo, idx), names),
            np.flatnonzero(good),
        )
        good[unreadable] = False
    parts = []
    if ragged.any():
        parts.append(
            (
                np.flatnonzero(ragged),
                [
                    f"expected {len(names)} fields (the header's), found {n}{_bare_cr(record)}"
                    for n, record in zip(
                        fields[ragged].tolist(),
                        _records(block.data, geo, np.flatnonzero(ragged)),
                        strict=True,
                    )
                ],
            )
        )
    if stray.any():
        parts.append((np.flatnonzero(stray), [_CSV_QUOTE_MESSAGE] * int(stray.sum())))
    if unreadable:
        parts.append((np.array(unreadable), ["the record is not valid CSV"] * len(unreadable)))
    errors = _malformed_records(rows, geo, parts)
    if not frames:
        return Parsed(_empty(columns), errors, int(solid.sum()))
    frame = _conform(pl.concat(frames, how="vertical_relaxed"), columns)
    return Parsed(_numbered(frame, rows[good], geo.lines[good]), errors, int(solid.sum()))


def _malformed_records(
    rows: np.ndarray,
    geo: Layout,
    parts: list[tuple[np.ndarray, list[str]]],
    values: dict[int, str] | None = None,
) -> pl.DataFrame:
    """One ``malformed_record`` error row per (record index, message), in record order."""
    if not parts:
        return empty_errors()
    idx = np.concatenate([p[0] for p in parts]).astype(np.int64)
    msgs = [m for p in parts for m in p[1]]
    order = np.argsort(idx, kind="stable")
    idx = idx[order]
    return malformed(
        rows[idx].tolist(),
        geo.lines[idx].tolist(),
        pl.Series([msgs[i] for i in order.tolist()], dtype=pl.String),
        None
        if values is None
        else pl.Series([values.get(i) for i in idx.tolist()], dtype=pl.String),
    )


# ---------------------------------------------------------------- NDJSON and JSON array


def _ndjson(data: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(data), schema=schema)


def _json_lines(block: Block) -> bytes:
    """Rewrite a JSON-array block as NDJSON: depth-1 commas become newlines, newlines spaces."""
    arr = as_array(block.data).copy()
    quotes = real_quotes(arr)
    inside = running_parity(quotes)
    outside = ~inside & ~quotes
    opens = outside & ((arr == 0x7B) | (arr == 0x5B))
    closes = outside & ((arr == 0x7D) | (arr == 0x5D))
    depth = nesting(opens, closes, 1)
    separators = outside & (arr == 0x2C) & (depth == 1)
    arr[arr == NL] = 0x20
    arr[separators] = NL
    return arr.tobytes()


def _json_shape(record: np.ndarray) -> tuple[int, int]:
    """(deepest nesting, members of the top-level value) of one JSON record's bytes."""
    quotes = real_quotes(record)
    inside = running_parity(quotes)
    outside = ~inside & ~quotes
    opens = outside & ((record == 0x7B) | (record == 0x5B))
    closes = outside & ((record == 0x7D) | (record == 0x5D))
    depth = nesting(opens, closes)
    deepest = int(depth.max()) if len(depth) else 0
    return deepest, int(np.count_nonzero(outside & (record == 0x2C) & (depth == 1))) + 1


def _json_limits(arr: np.ndarray, geo: Layout, candidates: np.ndarray) -> dict[int, str]:
    """Records nested deeper than MAX_JSON_DEPTH or with more than MAX_FIELDS members → message.

    Counting brackets and commas per record is cheap and bounds both, so only records with many
    of them (rare) are measured exactly, one at a time (each is at most max_record_bytes)."""
    opens = _count_per_record((arr == 0x7B) | (arr == 0x5B), geo)
    if ((geo.ends - geo.starts)[candidates] >= MAX_FIELDS).any():
        commas = _count_per_record(arr == 0x2C, geo)
    else:  # no record is long enough to hold MAX_FIELDS members
        commas = np.zeros(len(geo.ends), dtype=np.int64)
    suspects = np.flatnonzero(candidates & ((opens > MAX_JSON_DEPTH) | (commas >= MAX_FIELDS)))
    problems: dict[int, str] = {}
    for i in suspects.tolist():
        deepest, members = _json_shape(arr[int(geo.starts[i]) : int(geo.ends[i])])
        if deepest > MAX_JSON_DEPTH:
            problems[i] = (
                f"the record nests arrays/objects {deepest} levels deep; "
                f"at most {MAX_JSON_DEPTH} are accepted"
            )
        elif members > MAX_FIELDS:
            problems[i] = f"the object has {members} fields; at most {MAX_FIELDS} are accepted"
    return problems


#: What Python's ``str.strip()`` takes (``str.isspace``), for polars' ``strip_chars``: the
#: values echoed for malformed records stay what they were when each was stripped in Python.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _json_kind(text: pl.Expr) -> pl.Expr:
    """What a (stripped) record that is not an object holds, for the error message."""
    first = text.str.head(1)
    return (
        pl.when(text == "").then(pl.lit("nothing"))
        .when(first == "[").then(pl.lit("an array"))
        .when(first == '"').then(pl.lit("a string"))
        .when(text.is_in(["true", "false"])).then(pl.lit("a boolean"))
        .when(text == "null").then(pl.lit("null"))
        .when(first.is_in(list("-0123456789"))).then(pl.lit("a number"))
        .otherwise(pl.lit("something"))
    )  # fmt: skip


def _json_malformed(
    block: Block,
    geo: Layout,
    rows: np.ndarray,
    bad: np.ndarray,
    shaped: np.ndarray,
    limits: dict[int, str],
    *,
    array: bool,
) -> pl.DataFrame:
    """One error row per malformed record ``bad``: the message says what it holds; the value is
    the record (stripped of whitespace and the array's comma), at most 256 characters.
    Expressions over all of them, not a loop: a file may hold nothing else."""
    kind = "the element of the JSON array" if array else "the line"
    text = pl.col("text")
    ws = PY_WHITESPACE
    texts = _record_texts(block.data, geo, bad).to_frame("text")
    stripped = texts.select(text.str.strip_chars(ws).str.strip_chars_end(",").str.strip_chars(ws))
    limit = pl.Series("limit", [None] * len(bad), dtype=pl.String)
    if limits:
        limit = limit.scatter(np.searchsorted(bad, list(limits)), list(limits.values()))
    out = stripped.with_columns(limit, pl.Series("shaped", shaped[bad])).select(
        value=text.str.slice(0, 256).str.replace_all("\x00", NUL_SHOWN, literal=True),
        message=pl.when(pl.col("limit").is_not_null()).then(pl.col("limit"))
        .when(pl.col("shaped")).then(pl.lit(f"{kind} is not a valid JSON object"))
        .otherwise(pl.concat_str(pl.lit(f"{kind} holds "), _json_kind(text),
                                 pl.lit(", not a JSON object"))),
    )  # fmt: skip
    return malformed(rows[bad], geo.lines[bad], out["message"], out["value"])


def parse_json_lines(
    block: Block,
    columns: Sequence[str],
    first_row: int,
    *,
    array: bool,
    fields: FieldMap | None = None,
) -> Parsed:
    """``fields`` (a mapping, ``header_case=insensitive`` or ``mode=merge``; None: columns are
    read by their own names): keys are read by their sources (folded when insensitive) and
    renamed to fields, and with ``fields.presence`` the frame gets a :data:`PRESENT` column."""
    geo = layout(block)
    data = _json_lines(block) if array else block.data
    if fields is not None and fields.insensitive:
        data = fold_keys(data, geo.starts, geo.ends)
    arr = as_array(data)
    solid = ~geo.blank
    rows = first_row + np.cumsum(solid) - 1
    # Cheap vectorised pre-check: a record must start with '{' and end with '}'.
    first = first_solid(arr, geo.starts, geo.ends, _JSON_GAP)
    last = last_solid(arr, geo.starts, geo.ends, _JSON_GAP)
    inside = (first < geo.ends) & (last >= geo.starts) & (last >= 0)
    n = max(len(arr) - 1, 0)
    shaped = solid & inside
    if len(arr):
        shaped &= (arr[np.minimum(first, n)] == 0x7B) & (arr[np.clip(last, 0, n)] == 0x7D)
    limits = _json_limits(arr, geo, shaped)
    if limits:
        shaped[list(limits)] = False
    keys = {c: c for c in columns} if fields is None else fields.json_keys()
    schema: dict[str, pl.DataType] = {k: pl.String() for k in keys.values()}
    frames: list[pl.DataFrame] = []
    unreadable: list[int] = []
    if shaped.any():
        frames, unreadable = _isolate_json(
            lambda idx: _ndjson(_subset_bytes(data, geo, idx), schema),
            data,
            geo,
            np.flatnonzero(shaped),
        )
    good = shaped.copy()
    good[unreadable] = False
    errors = empty_errors()
    bad = np.flatnonzero(solid & ~good)
    if len(bad):
        errors = _json_malformed(block, geo, rows, bad, shaped, limits, array=array)
    if not frames:
        empty = with_records(_empty(columns), data, geo, np.flatnonzero(good))
        if fields is not None and fields.presence:
            empty = empty.with_columns(pl.lit(0, dtype=pl.Int64).alias(PRESENT))
        return Parsed(empty, errors, int(solid.sum()))
    frame = pl.concat(frames, how="vertical_relaxed")
    if fields is not None:
        frame = frame.rename({k: f for f, k in keys.items() if k != f})
    frame = _conform(frame, columns)
    records = np.flatnonzero(good)
    frame = _reencode_nested(frame, data, geo, records, keys)
    frame = with_records(frame, data, geo, records)
    frame = _numbered(frame, rows[good], geo.lines[good])
    if fields is not None and fields.presence:
        frame = _with_presence(frame, fields, keys, data, geo, records)
    return Parsed(frame, errors, int(solid.sum()))


def _with_presence(
    frame: pl.DataFrame,
    fields: FieldMap,
    keys: dict[str, str],
    data: bytes,
    geo: Layout,
    records: np.ndarray,
) -> pl.DataFrame:
    """``frame`` with :data:`PRESENT`: the fields each record holds, ``null`` values included
    (a value read is held; a null one is looked up among the record's keys)."""
    nulls = [f for f in keys if frame.get_column(f).null_count()]
    held = holding(data, geo.starts, geo.ends, [keys[f] for f in nulls]) if nulls else {}
    bits = np.zeros(frame.height, dtype=np.int64)
    for f in keys:
        has = frame.get_column(f).is_not_null().to_numpy()
        if keys[f] in held:
            has = has | held[keys[f]][records]
        bits |= has.astype(np.int64) << fields.fields.index(f)
    return frame.with_columns(pl.Series(PRESENT, bits, dtype=pl.Int64))


def _reencode_nested(
    frame: pl.DataFrame, data: bytes, geo: Layout, records: np.ndarray, keys: dict[str, str]
) -> pl.DataFrame:
    """polars hands nested values (arrays, objects) back as JSON text without escaping
    backslashes or control characters, which is ambiguous (``["\\"]`` could be one backslash or
    two). The few values holding a backslash are re-encoded from the record itself."""
    fixes: list[pl.Series] = []
    for name in frame.columns:
        col = frame.get_column(name)
        nested = col.str.starts_with("[") | col.str.starts_with("{")
        suspects = np.flatnonzero((nested & col.str.contains("\\", literal=True)).fill_null(False))
        if not len(suspects):
            continue
        values = col.to_list()
        view = memoryview(data)
        for i in suspects.tolist():  # only values holding a backslash: rare
            r = int(records[i])
            try:
                value = json.loads(
                    bytes(view[int(geo.starts[r]) : int(geo.ends[r])]).strip().rstrip(b",")
                )
            except ValueError:
                continue
            original = value.get(keys.get(name, name)) if isinstance(value, dict) else None
            if isinstance(original, list | dict):
                values[i] = json.dumps(original, ensure_ascii=False)
        fixes.append(pl.Series(name, values, dtype=pl.String))
    return frame.with_columns(fixes) if fixes else frame


def json_keys(block: Block, *, array: bool, limit: int = KEY_SAMPLE) -> set[str]:
    """Top-level keys of the first ``limit`` records that are JSON objects (for the warning about
    unknown keys; once per file, so a bounded Python loop is fine)."""
    geo = layout(block)
    data = _json_lines(block) if array else block.data
    keys: set[str] = set()
    for i in np.flatnonzero(~geo.blank)[:limit].tolist():
        record = data[int(geo.starts[i]) : int(geo.ends[i])]
        if record.count(b"{") + record.count(b"[") > MAX_JSON_DEPTH:
            continue  # json.loads recurses per level
        try:
            value = json.loads(record)
        except ValueError:
            continue
        if isinstance(value, dict):
            keys.update(value)
    return keys
