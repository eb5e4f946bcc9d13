"""Parse one block of whole records into a polars frame of strings, isolating malformed records.

Output columns are exactly the resource's columns (String; absent ones are null) plus
``__row`` and ``__line``. Malformed records become error rows and do not reach validation.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.error_rows import empty_errors, malformed
from engine.formats.framing import NL, QUOTE, Block, as_array, real_quotes
from engine.formats.records import Layout, layout

ROW = "__row"
LINE = "__line"


@dataclass(frozen=True, slots=True)
class Parsed:
    frame: pl.DataFrame
    errors: pl.DataFrame
    #: rows (non-blank records) in this block, malformed ones included
    rows: int


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


def _good_bytes(data: bytes, geo: Layout, good: np.ndarray, sep: bytes = b"") -> bytes:
    run_starts, run_stops = _runs(good)
    starts = geo.starts[run_starts]
    ends = geo.ends[run_stops - 1]
    if not sep:
        return _concat_ranges(data, starts, ends)
    return sep.join(
        bytes(memoryview(data)[int(s) : int(e)]) for s, e in zip(starts, ends, strict=True)
    )


# ---------------------------------------------------------------- CSV


def csv_fields_per_record(block: Block, geo: Layout) -> np.ndarray:
    """Number of fields of each record: commas outside quotes, plus one."""
    arr = as_array(block.data)
    outside = (np.cumsum(arr == QUOTE, dtype=np.int64) & 1) == 0
    commas = np.flatnonzero((arr == 0x2C) & outside)
    owner = np.searchsorted(geo.ends, commas, side="right")
    return np.bincount(owner, minlength=len(geo.ends))[: len(geo.ends)] + 1


def parse_csv(
    block: Block, header: bytes, names: Sequence[str], columns: Sequence[str], first_row: int
) -> Parsed:
    geo = layout(block)
    solid = ~geo.blank
    rows = first_row + np.cumsum(solid) - 1
    fields = csv_fields_per_record(block, geo)
    bad = solid & (fields != len(names))
    good = solid & ~bad
    errors = empty_errors()
    if bad.any():
        found = fields[bad]
        errors = malformed(
            rows[bad].tolist(),
            geo.lines[bad].tolist(),
            pl.Series(
                [f"expected {len(names)} fields (the header's), found {n}" for n in found.tolist()]
            ),
        )
    if not good.any():
        return Parsed(_empty(columns), errors, int(solid.sum()))
    body = _good_bytes(block.data, geo, good)
    if not body.endswith(b"\n"):
        body += b"\n"
    frame = pl.read_csv(
        io.BytesIO(header + body),
        has_header=True,
        new_columns=list(names),
        infer_schema=False,
        quote_char='"',
        raise_if_empty=False,
        truncate_ragged_lines=False,
    )
    frame = _conform(frame, columns)
    return Parsed(_numbered(frame, rows[good], geo.lines[good]), errors, int(solid.sum()))


# ---------------------------------------------------------------- NDJSON and JSON array


def _ndjson(data: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(data), schema=schema)


def _isolate(
    data: bytes, starts: np.ndarray, ends: np.ndarray, schema: dict[str, pl.DataType]
) -> tuple[list[pl.DataFrame], list[int]]:
    """Parse lines [starts, ends); on failure bisect to find the bad ones (frames, bad idx)."""
    frames: list[tuple[int, pl.DataFrame]] = []
    bad: list[int] = []
    stack = [(0, len(starts))]
    while stack:
        lo, hi = stack.pop()
        chunk = bytes(memoryview(data)[int(starts[lo]) : int(ends[hi - 1])])
        try:
            frames.append((lo, _ndjson(chunk, schema)))
        except pl.exceptions.PolarsError:
            if hi - lo == 1:
                bad.append(lo)
            else:
                mid = (lo + hi) // 2
                stack.append((mid, hi))
                stack.append((lo, mid))
    return [f for _, f in sorted(frames, key=lambda t: t[0])], bad


def _json_lines(block: Block) -> tuple[bytes, Block]:
    """Rewrite a JSON-array block as NDJSON: depth-1 commas become newlines, newlines spaces."""
    arr = as_array(block.data).copy()
    quotes = real_quotes(arr)
    inside = (np.cumsum(quotes, dtype=np.int64) & 1).astype(bool)
    outside = ~inside & ~quotes
    opens = outside & ((arr == 0x7B) | (arr == 0x5B))
    closes = outside & ((arr == 0x7D) | (arr == 0x5D))
    depth = 1 + np.cumsum(opens.astype(np.int64) - closes.astype(np.int64))
    separators = outside & (arr == 0x2C) & (depth == 1)
    arr[arr == NL] = 0x20
    arr[separators] = NL
    return arr.tobytes(), block


def parse_json_lines(
    block: Block, columns: Sequence[str], first_row: int, *, array: bool
) -> Parsed:
    geo = layout(block)
    data = _json_lines(block)[0] if array else block.data
    arr = as_array(data)
    solid = ~geo.blank
    rows = first_row + np.cumsum(solid) - 1
    # Cheap vectorised pre-check: a record must start with '{' and end with '}'.
    ws = np.isin(arr, np.frombuffer(b" \t\r\n,", dtype=np.uint8))
    solid_pos = np.flatnonzero(~ws)
    first_idx = np.searchsorted(solid_pos, geo.starts)
    last_idx = np.searchsorted(solid_pos, geo.ends) - 1
    safe_first = (
        solid_pos[np.minimum(first_idx, max(len(solid_pos) - 1, 0))]
        if len(solid_pos)
        else geo.starts
    )
    safe_last = (
        solid_pos[np.clip(last_idx, 0, max(len(solid_pos) - 1, 0))]
        if len(solid_pos)
        else geo.starts
    )
    shaped = (
        solid
        & (arr[np.minimum(safe_first, len(arr) - 1)] == 0x7B)
        & (arr[np.minimum(safe_last, len(arr) - 1)] == 0x7D)
        if len(arr)
        else solid & False
    )
    schema: dict[str, pl.DataType] = {c: pl.String() for c in columns}
    candidates = np.flatnonzero(shaped)
    frames: list[pl.DataFrame] = []
    bad_idx: list[int] = np.flatnonzero(solid & ~shaped).tolist()
    if len(candidates):
        run_starts, run_stops = _runs(shaped)
        for rs, re_ in zip(run_starts.tolist(), run_stops.tolist(), strict=True):
            idx = np.arange(rs, re_)
            got, bad = _isolate(data, geo.starts[idx], geo.ends[idx], schema)
            frames.extend(got)
            bad_idx.extend(int(idx[b]) for b in bad)
    good = shaped.copy()
    if bad_idx:
        good[np.array(bad_idx, dtype=np.int64)] = False
    errors = empty_errors()
    if bad_idx:
        order = np.sort(np.array(bad_idx, dtype=np.int64))
        kind = "an element of the JSON array" if array else "the line"
        errors = malformed(
            rows[order].tolist(),
            geo.lines[order].tolist(),
            f"{kind} is not a valid JSON object",
            pl.Series(
                [
                    bytes(memoryview(block.data)[int(geo.starts[i]) : int(geo.ends[i])])
                    .decode("utf-8", "replace")
                    .strip()
                    .rstrip(",")[:256]
                    for i in order.tolist()
                ],
                dtype=pl.String,
            ),
        )
    if not frames:
        return Parsed(_empty(columns), errors, int(solid.sum()))
    frame = _conform(pl.concat(frames, how="vertical_relaxed"), columns)
    return Parsed(_numbered(frame, rows[good], geo.lines[good]), errors, int(solid.sum()))
