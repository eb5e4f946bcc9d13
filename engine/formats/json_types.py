"""The JSON type of each top-level value of JSON records (string, number, array, …), vectorised.

polars reads the records with a schema of strings, which turns ``5``, ``true``, ``[..]`` and
``{..}`` into text: ``5`` and ``"5"`` read alike. Validation needs the type the file held (a
number is not an email, a string is not a tag list), so :func:`with_types` adds beside each
column a ``UInt8`` column (:func:`type_column`) of :class:`JsonType` codes.

Most values need no look at the bytes: polars writes a non-string as a number (``-?\\d+(.\\d+)?``),
``true``/``false``, or text starting with ``[`` or ``{``; any other text was a JSON string. Only
values that read like one of those (every tag list and boolean, the odd title ``1984``) are
looked up in their record: polars finds ``"name":`` in each (a byte search), and the first byte
after it gives the type (``"`` string, ``[`` array, ``{`` object, ``t``/``f`` boolean, ``n``
null, else a number). In a valid JSON record a quote not preceded by a backslash, followed by
the name, a quote and a colon always opens a key — but possibly a nested object's key, or written
with a space before the colon. Records where that can be (more than one ``{``, or no match) are
scanned exactly (:func:`_scan`: every key of the block, with the strings and nesting depth worked
out), and a key whose name is written with ``\\u`` escapes is left to :mod:`json` (rare).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from engine.formats.framing import _WS, BACKSLASH, QUOTE, as_array
from engine.formats.records import Layout, first_solid, last_solid

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

_PREFIX = "__json_"


def type_column(name: str) -> str:
    """Name of the column holding the JSON types of column ``name``'s values."""
    return _PREFIX + name


def _skip_space(arr: np.ndarray, pos: np.ndarray, limit: np.ndarray, step: int) -> np.ndarray:
    """``pos`` moved by ``step`` (1 or -1) past whitespace, not beyond ``limit`` (a no-op for
    compact JSON)."""
    spaced = np.flatnonzero(_WS[arr[pos]])
    if len(spaced):
        pos = pos.copy()
        if step > 0:
            pos[spaced] = first_solid(arr, pos[spaced], limit[spaced], _WS)
        else:
            pos[spaced] = last_solid(arr, limit[spaced], pos[spaced] + 1, _WS)
    return pos


# ---------------------------------------------------------------- the exact scan (rare records)


def _matching(arr: np.ndarray, close: np.ndarray, tail: np.ndarray, name: bytes) -> np.ndarray:
    """Indices of the keys (closing quotes ``close``) that are exactly ``"name"``; ``tail`` holds
    the two bytes before each closing quote."""
    size = len(name)
    if size > 1:
        picked = np.flatnonzero(tail == (name[-1] | name[-2] << 8))
    else:
        picked = np.flatnonzero((tail & 0xFF) == name[0])
    for j in range(3, size + 1):
        picked = picked[arr[close[picked] - j] == name[-j]]
    opening = close[picked] - size - 1
    inside = opening >= 1
    picked, opening = picked[inside], opening[inside]
    # A quote after a backslash is escaped, or closes a string: it never opens a key.
    return picked[(arr[opening] == QUOTE) & (arr[opening - 1] != BACKSLASH)]


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
    """Object nesting depth at any position of a block's records, strings skipped: the braces
    outside strings, found with sparse binary searches over the quotes (built only for blocks
    holding a nested object or a brace inside a string)."""

    def __init__(self, arr: np.ndarray, geo: Layout) -> None:
        self.geo = geo
        self.quotes = np.flatnonzero(arr == QUOTE)
        self.escaped = _escaped(arr, self.quotes)
        self.at_start = self._real_quotes_before(geo.starts)
        braces = np.flatnonzero((arr == _OPEN) | (arr == _CLOSE))
        braces = braces[self._outside(braces, self._owner(braces))]
        self.opens = braces[arr[braces] == _OPEN]
        self.closes = braces[arr[braces] == _CLOSE]

    def _owner(self, pos: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.geo.ends, pos, side="right"), len(self.geo.ends) - 1)

    def _real_quotes_before(self, pos: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.quotes, pos) - np.searchsorted(self.escaped, pos)

    def _outside(self, pos: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Records start outside strings: an even count of real quotes since is outside."""
        since = self._real_quotes_before(pos) - self.at_start[owner]
        return (since & 1) == 0

    def depth(self, pos: np.ndarray, owner: np.ndarray) -> np.ndarray:
        first = self.geo.starts[owner]
        opened = np.searchsorted(self.opens, pos) - np.searchsorted(self.opens, first)
        return opened - (np.searchsorted(self.closes, pos) - np.searchsorted(self.closes, first))


def _scan(
    arr: np.ndarray,
    geo: Layout,
    chosen: np.ndarray,
    columns: Sequence[str],
    nesting: _Nesting | None = None,
) -> dict[str, np.ndarray]:
    """Per column, the type of its value in every record (ABSENT outside ``chosen``): every
    top-level key of the chosen records, found from the colons of the whole block."""
    out = {c: np.zeros(len(geo.ends), dtype=np.uint8) for c in columns}
    colons = np.flatnonzero(arr == _COLON)
    owner = np.searchsorted(geo.ends, colons, side="right")
    mine = (colons > 0) & (owner < len(geo.ends))
    mine[mine] = chosen[owner[mine]]
    colons, owner = colons[mine], owner[mine]
    starts = geo.starts[owner]
    close = _skip_space(arr, colons - 1, starts, -1)
    keyed = (close > starts) & (arr[close] == QUOTE)
    colons, owner, close = colons[keyed], owner[keyed], close[keyed]
    top = (nesting or _Nesting(arr, geo)).depth(colons, owner) == 1
    colons, owner, close = colons[top], owner[top], close[top]
    kinds = _BY_FIRST_BYTE[arr[_skip_space(arr, colons + 1, geo.ends[owner], 1)]]
    tail = arr[close - 1].astype(np.int32) | (arr[close - 2].astype(np.int32) << 8)
    for name in columns:
        picked = _matching(arr, close, tail, name.encode())
        who = owner[picked]
        # A repeated key: polars keeps the first value, so does this.
        first = np.ones(len(who), dtype=bool)
        first[1:] = who[1:] != who[:-1]
        out[name][who[first]] = kinds[picked[first]]
    return out


# ---------------------------------------------------------------- the common path


def _lines(data: bytes, geo: Layout, records: np.ndarray) -> pl.Series:
    """The text of each record in ``records`` (a view of ``data``, not a copy)."""
    offsets = np.concatenate(([0], geo.ends)).astype(np.int64)
    whole = pa.LargeStringArray.from_buffers(
        len(geo.ends), pa.py_buffer(offsets), pa.py_buffer(data)
    )
    lines = pl.Series(whole)
    return lines.gather(records) if len(records) != len(geo.ends) else lines


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


def _by_json(
    types: dict[str, np.ndarray], rows: np.ndarray, data: bytes, geo: Layout, records: np.ndarray
) -> None:
    """Type ``rows`` with :mod:`json`, one record at a time (keys written with escapes: rare)."""
    view = memoryview(data)
    for i in rows.tolist():
        r = int(records[i])
        text = bytes(view[int(geo.starts[r]) : int(geo.ends[r])]).strip().rstrip(b",")
        try:
            value = json.loads(text, object_pairs_hook=_first_wins)
        except ValueError:
            continue
        for name, t in types.items():
            t[i] = _type_of(value.get(name)) if isinstance(value, dict) else JsonType.ABSENT


def with_types(
    frame: pl.DataFrame, columns: Sequence[str], data: bytes, geo: Layout, records: np.ndarray
) -> pl.DataFrame:
    """``frame`` (records ``records`` of ``data``, read by polars as objects, in order) with the
    JSON type of each column's values beside it (see the module docstring)."""
    # Per column: absent, surely a string, or to be looked up. (Series by Series: a parallel
    # select of the same expressions took twice the CPU, measured.)
    types: dict[str, np.ndarray] = {}
    looked: dict[str, np.ndarray] = {}
    for name in columns:
        text = frame.get_column(name)
        t = text.is_not_null().to_numpy().astype(np.uint8)  # ABSENT 0, STRING 1
        looked[name] = np.flatnonzero(text.str.contains(_RENDERED).fill_null(False).to_numpy())
        types[name] = t
    if any(len(rows) for rows in looked.values()):
        _look_up(types, looked, data, geo, records)
    # A value polars read (not null) but whose key the bytes did not show: a key written with
    # escapes (or a value polars and these bytes disagree on). json decides.
    disagree = [rows[types[name][rows] == JsonType.ABSENT] for name, rows in looked.items()]
    rows = np.unique(np.concatenate(disagree)) if disagree else np.empty(0, np.int64)
    if len(rows):
        _by_json(types, rows, data, geo, records)
    typed = frame.with_columns(
        pl.Series(type_column(name), t, dtype=pl.UInt8) for name, t in types.items()
    )
    # Beside the values, before any numbering columns the frame already has.
    order = [*columns, *(type_column(name) for name in columns)]
    return typed.select(order + [c for c in frame.columns if c not in set(columns)])


def _look_up(
    types: dict[str, np.ndarray],
    looked: dict[str, np.ndarray],
    data: bytes,
    geo: Layout,
    records: np.ndarray,
) -> None:
    """Type the ``looked`` rows of each column from the byte after ``"name":`` in their record;
    records where that may mislead are scanned exactly (:func:`_scan`)."""
    arr = as_array(data)
    lines = _lines(data, geo, records)
    # One '{' per record (its own): no key found can belong to a nested object.
    nesting = _Nesting(arr, geo) if np.count_nonzero(arr == _OPEN) > len(records) else None
    unsure = np.zeros(len(records), dtype=bool)
    for name, rows in looked.items():
        if not len(rows):
            continue
        pattern = f'"{name}":'
        texts = lines if len(rows) == len(records) else lines.gather(rows)
        found = texts.str.find(pattern, literal=True).to_numpy()
        sure = ~np.isnan(found) if found.dtype.kind == "f" else np.ones(len(rows), dtype=bool)
        rec = records[rows[sure]]
        key = geo.starts[rec] + found[sure].astype(np.int64)
        # A quote after a backslash does not open a key (the key is further on).
        ok = (key == 0) | (arr[np.maximum(key - 1, 0)] != BACKSLASH)
        if nesting is not None:
            ok &= nesting.depth(key, rec) == 1
        sure[sure] = ok
        rec, key = rec[ok], key[ok]
        value = _skip_space(arr, key + len(pattern.encode()), geo.ends[rec], 1)
        types[name][rows[sure]] = _BY_FIRST_BYTE[arr[value]]
        unsure[rows[~sure]] = True
    if unsure.any():
        chosen = np.zeros(len(geo.ends), dtype=bool)
        chosen[records[unsure]] = True
        exact = _scan(arr, geo, chosen, list(looked), nesting)
        for name, rows in looked.items():
            redo = rows[unsure[rows]]
            types[name][redo] = exact[name][records[redo]]
