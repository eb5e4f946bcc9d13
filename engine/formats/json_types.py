"""The JSON type of top-level values of JSON records (string, number, array, …), vectorised.

polars reads the records with a schema of strings, which turns ``5``, ``true``, ``[..]`` and
``{..}`` into text: ``5`` and ``"5"`` read alike. Validation needs the type the file held (a
number is not a name, a string is not a tag list). The parser keeps each record's text beside
its values (:func:`with_records`: a view of the block, no copy), and validation asks
:class:`RecordTypes` for the type of just the values it needs to know about:

- polars writes a non-string as a number (``-?\\d+(.\\d+)?``), ``true``/``false``, or text
  starting with ``[`` or ``{`` (:func:`maybe_not_string`); any other text was a JSON string;
- a value is looked up in its record: polars finds ``"name":`` (a byte search) and the first
  byte after it gives the type (``"`` string, ``[`` array, ``{`` object, ``t``/``f`` boolean,
  ``n`` null, else a number). In a valid JSON record a quote not preceded by a backslash,
  followed by the name, a quote and a colon always opens a key, but possibly a nested object's:
  in blocks holding more ``{`` than records the depth of the key is checked (braces outside
  strings). A key not found that way (a space before its colon, a nested one first) is found by
  an exact scan of the records' keys (:class:`_Keys`), and one written with ``\\u`` escapes by
  :mod:`json` (rare).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from engine.formats.framing import BACKSLASH, QUOTE, WS
from engine.formats.records import Layout, first_solid, last_solid

#: The column holding each record's text (JSON input only).
RECORD = "__record"

_COLON = 0x3A
_OPEN = 0x7B
_CLOSE = 0x7D
#: Text polars makes of a JSON number, boolean, array or object (strings come through as is).
_RENDERED = r"^(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false)$|^[\[{]"


class JsonType(IntEnum):
    """What a JSON value is; ``ABSENT`` also stands for ``null``."""

    ABSENT = 0
    STRING = 1
    NUMBER = 2
    BOOLEAN = 3
    ARRAY = 4
    OBJECT = 5


#: How messages name each type.
ARTICLED = {
    JsonType.STRING: "a string",
    JsonType.NUMBER: "a number",
    JsonType.BOOLEAN: "a boolean",
    JsonType.ARRAY: "an array",
    JsonType.OBJECT: "an object",
}

_BY_FIRST_BYTE = np.full(256, JsonType.NUMBER, dtype=np.uint8)
_BY_FIRST_BYTE[QUOTE] = JsonType.STRING
_BY_FIRST_BYTE[ord("[")] = JsonType.ARRAY
_BY_FIRST_BYTE[_OPEN] = JsonType.OBJECT
_BY_FIRST_BYTE[[ord("t"), ord("f")]] = JsonType.BOOLEAN
_BY_FIRST_BYTE[ord("n")] = JsonType.ABSENT


def with_records(
    frame: pl.DataFrame, data: bytes, geo: Layout, records: np.ndarray
) -> pl.DataFrame:
    """``frame`` (records ``records`` of ``data``, in order) with each record's text in
    :data:`RECORD`, placed before any numbering columns (a view of ``data``, not a copy)."""
    offsets = np.concatenate(([0], geo.ends)).astype(np.int64)
    whole = pa.LargeStringArray.from_buffers(
        len(geo.ends), pa.py_buffer(offsets), pa.py_buffer(data)
    )
    lines = pl.Series(RECORD, whole)
    if len(records) != len(geo.ends):
        lines = lines.gather(records)
    at = frame.columns.index("__row") if "__row" in frame.columns else frame.width
    return frame.insert_column(at, lines)


def maybe_not_string(text: pl.Series) -> np.ndarray:
    """Rows whose text could be polars' rendering of a number, boolean, array or object (the
    others were JSON strings or null)."""
    return text.str.contains(_RENDERED).fill_null(False).to_numpy()


def _skip_space(arr: np.ndarray, pos: np.ndarray, limit: np.ndarray, step: int) -> np.ndarray:
    """``pos`` moved by ``step`` (1 or -1) past whitespace, not beyond ``limit`` (a no-op for
    compact JSON)."""
    spaced = np.flatnonzero(WS[arr[pos]])
    if len(spaced):
        pos = pos.copy()
        if step > 0:
            pos[spaced] = first_solid(arr, pos[spaced], limit[spaced], WS)
        else:
            pos[spaced] = last_solid(arr, limit[spaced], pos[spaced] + 1, WS)
    return pos


def _escaped(arr: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """The ``quotes`` escaped by an odd run of backslashes (few: only quotes after a backslash
    are walked back, one step per backslash of the longest run)."""
    after = quotes[(quotes > 0) & (arr[np.maximum(quotes - 1, 0)] == BACKSLASH)]
    run = np.zeros(len(after), dtype=np.int64)
    active = np.ones(len(after), dtype=bool)
    step = 1
    while active.any():
        pos = after - step
        active &= pos >= 0
        active[active] = arr[pos[active]] == BACKSLASH
        run[active] += 1
        step += 1
    return after[run % 2 == 1]


class _Nesting:
    """Object nesting depth at any position of the records, strings skipped: the braces outside
    strings, found with sparse binary searches over the quotes (built only when some record
    holds a nested object or a brace inside a string)."""

    def __init__(self, arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.starts, self.ends = starts, ends
        self.quotes = np.flatnonzero(arr == QUOTE)
        self.escaped = _escaped(arr, self.quotes)
        self.at_start = self._real_quotes_before(starts)
        braces = np.flatnonzero((arr == _OPEN) | (arr == _CLOSE))
        braces = braces[self._outside(braces, self.owner(braces))]
        self.opens = braces[arr[braces] == _OPEN]
        self.closes = braces[arr[braces] == _CLOSE]

    def owner(self, pos: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.ends, pos, side="right"), len(self.ends) - 1)

    def _real_quotes_before(self, pos: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.quotes, pos) - np.searchsorted(self.escaped, pos)

    def _outside(self, pos: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Records start outside strings: an even count of real quotes since is outside."""
        return ((self._real_quotes_before(pos) - self.at_start[owner]) & 1) == 0

    def depth(self, pos: np.ndarray, owner: np.ndarray) -> np.ndarray:
        first = self.starts[owner]
        opened = np.searchsorted(self.opens, pos) - np.searchsorted(self.opens, first)
        return opened - (np.searchsorted(self.closes, pos) - np.searchsorted(self.closes, first))


def _matching(arr: np.ndarray, close: np.ndarray, name: bytes) -> np.ndarray:
    """Indices of the keys (closing quotes ``close``) that are exactly ``"name"``."""
    size = len(name)
    picked = np.arange(len(close))
    for j in range(1, size + 1):
        picked = picked[arr[close[picked] - j] == name[-j]]
    opening = close[picked] - size - 1
    inside = opening >= 1
    picked, opening = picked[inside], opening[inside]
    # A quote after a backslash is escaped, or closes a string: it never opens a key.
    return picked[(arr[opening] == QUOTE) & (arr[opening - 1] != BACKSLASH)]


class _Keys:
    """Every top-level key of the records: its colon, record and closing quote, found from all
    the colons (the exact way, for the values :meth:`RecordTypes.of` cannot find by search)."""

    def __init__(self, arr: np.ndarray, starts: np.ndarray, nesting: _Nesting) -> None:
        colons = np.flatnonzero(arr == _COLON)
        owner = nesting.owner(colons)
        first = starts[owner]
        close = _skip_space(arr, np.maximum(colons - 1, 0), first, -1)
        keyed = (close > first) & (arr[close] == QUOTE)
        colons, owner, close = colons[keyed], owner[keyed], close[keyed]
        top = nesting.depth(colons, owner) == 1
        self.colons, self.owner, self.close = colons[top], owner[top], close[top]

    def types(self, arr: np.ndarray, ends: np.ndarray, name: bytes) -> np.ndarray:
        """The type of ``name``'s value in each record (ABSENT where it has none)."""
        picked = _matching(arr, self.close, name)
        colons, owner = self.colons[picked], self.owner[picked]
        # A repeated key: polars keeps the first value, so does this.
        once = np.ones(len(owner), dtype=bool)
        once[1:] = owner[1:] != owner[:-1]
        colons, owner = colons[once], owner[once]
        out = np.zeros(len(ends), dtype=np.uint8)
        out[owner] = _BY_FIRST_BYTE[arr[_skip_space(arr, colons + 1, ends[owner], 1)]]
        return out


def _type_of(value: Any) -> JsonType:
    if value is None:
        return JsonType.ABSENT
    if isinstance(value, str):
        return JsonType.STRING
    if isinstance(value, bool):
        return JsonType.BOOLEAN
    if isinstance(value, int | float):
        return JsonType.NUMBER
    return JsonType.ARRAY if isinstance(value, list) else JsonType.OBJECT


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def _views(lines: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The records where they are: polars hands out its string views without a copy, and the
    views of :func:`with_records`'s column point into the block itself (one buffer; each record
    longer than the 12 bytes a view holds inline). None when that is not so."""
    arrow = lines.to_arrow(compat_level=pl.CompatLevel.newest())
    if not isinstance(arrow, pa.Array) or arrow.type != pa.string_view():
        return None
    buffers = arrow.buffers()
    if len(buffers) != 3 or buffers[0] is not None or buffers[1] is None or buffers[2] is None:
        return None
    views = np.frombuffer(buffers[1], dtype=np.int32).reshape(-1, 4)
    views = views[arrow.offset : arrow.offset + len(arrow)]
    sizes = views[:, 0].astype(np.int64)
    if not ((sizes > 12).all() and (views[:, 2] == 0).all()):
        return None
    starts = views[:, 3].astype(np.int64)
    return np.frombuffer(buffers[2], dtype=np.uint8), starts, starts + sizes


def _copied(lines: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The records copied into one buffer (when :func:`_views` cannot be had)."""
    arrow = lines.to_arrow()
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    if arrow.type != pa.large_string():
        arrow = arrow.cast(pa.large_string())
    _, offsets, data = arrow.buffers()
    n = len(arrow)
    edges = np.frombuffer(offsets, dtype=np.int64)[arrow.offset : arrow.offset + n + 1]
    arr = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(1, dtype=np.uint8)
    return arr, edges[:-1], edges[1:]  # the arrays keep the buffers alive


class RecordTypes:
    """Looks up the JSON type of values in the records of a frame's :data:`RECORD` column (the
    records' bytes are taken from polars at the first look-up: clean files often need none)."""

    def __init__(self, lines: pl.Series) -> None:
        self.lines = lines
        self._bytes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._nesting: _Nesting | None = None
        self._nested: bool | None = None
        self._keys: _Keys | None = None

    def _records(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bytes, record starts, record ends)."""
        if self._bytes is None:
            self._bytes = _views(self.lines) or _copied(self.lines)
        return self._bytes

    def _nesting_if_any(self) -> _Nesting | None:
        """None when every record holds one ``{`` (its own): no key belongs to a nested one."""
        arr, starts, ends = self._records()
        if self._nested is None:
            self._nested = bool(np.count_nonzero(arr == _OPEN) > len(ends))
        if self._nested and self._nesting is None:
            self._nesting = _Nesting(arr, starts, ends)
        return self._nesting

    def of(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The type of column ``name``'s value in each of ``rows`` (rows whose value polars read
        as not null)."""
        arr, starts, ends = self._records()
        pattern = f'"{name}":'
        texts = self.lines if len(rows) == len(ends) else self.lines.gather(rows)
        found = texts.str.find(pattern, literal=True).to_numpy()
        sure = ~np.isnan(found) if found.dtype.kind == "f" else np.ones(len(rows), dtype=bool)
        out = np.zeros(len(rows), dtype=np.uint8)
        key = starts[rows[sure]] + found[sure].astype(np.int64)
        # A quote after a backslash does not open a key (the key is further on).
        ok = (arr[np.maximum(key - 1, 0)] != BACKSLASH) | (key == starts[rows[sure]])
        nesting = self._nesting_if_any()
        if nesting is not None:
            ok &= nesting.depth(key, rows[sure]) == 1
        sure[sure] = ok
        key = key[ok]
        value = _skip_space(arr, key + len(pattern.encode()), ends[rows[sure]], 1)
        out[sure] = _BY_FIRST_BYTE[arr[value]]
        if not sure.all():
            if self._keys is None:
                nesting = nesting or _Nesting(arr, starts, ends)
                self._keys = _Keys(arr, starts, nesting)
            out[~sure] = self._keys.types(arr, ends, name.encode())[rows[~sure]]
        # polars read a value the bytes did not show (a key written with escapes): json decides.
        for i in np.flatnonzero(out == JsonType.ABSENT).tolist():
            out[i] = self._by_json(int(rows[i]), name)
        return out

    def _by_json(self, row: int, name: str) -> JsonType:
        arr, starts, ends = self._records()
        text = arr[starts[row] : ends[row]].tobytes().strip().rstrip(b",")
        try:
            value = json.loads(text, object_pairs_hook=_first_wins)
        except ValueError:
            return JsonType.ABSENT
        return _type_of(value.get(name)) if isinstance(value, dict) else JsonType.ABSENT


def types_of(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Every column's type in every row (tests and tools; validation asks only what it needs)."""
    records = RecordTypes(frame.get_column(RECORD))
    out = {}
    for name in columns:
        present = frame.get_column(name).is_not_null().to_numpy()
        t = present.astype(np.uint8)
        rows = np.flatnonzero(present)
        if len(rows):
            t[rows] = records.of(name, rows)
        out[name] = t
    return out
