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

from engine.formats.framing import _WS, BACKSLASH, QUOTE, as_array, real_quotes
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


def _depths(arr: np.ndarray, geo: Layout, at: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Object nesting depth at each position ``at`` (in record ``owner``), strings skipped."""
    quotes = np.flatnonzero(real_quotes(arr))
    before_record = np.searchsorted(quotes, geo.starts)

    def outside(pos: np.ndarray) -> np.ndarray:
        rec = np.minimum(np.searchsorted(geo.ends, pos, side="right"), len(geo.starts) - 1)
        return pos[((np.searchsorted(quotes, pos) - before_record[rec]) & 1) == 0]

    opens = outside(np.flatnonzero(arr == _OPEN))
    closes = outside(np.flatnonzero(arr == _CLOSE))
    first = geo.starts[owner]
    return (np.searchsorted(opens, at) - np.searchsorted(opens, first)) - (
        np.searchsorted(closes, at) - np.searchsorted(closes, first)
    )


def _scan(
    arr: np.ndarray, geo: Layout, chosen: np.ndarray, columns: Sequence[str]
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
    top = _depths(arr, geo, colons, owner) == 1
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


def _nested(arr: np.ndarray, geo: Layout, records: np.ndarray) -> np.ndarray:
    """Per record of ``records``: does it hold more than one ``{`` (a nested object, or a brace
    in a string)? A key found there may belong to a nested object."""
    if np.count_nonzero(arr == _OPEN) <= len(records):  # one per record: none is nested
        return np.zeros(len(records), dtype=bool)
    opens = np.flatnonzero(arr == _OPEN)
    inside = np.searchsorted(opens, geo.ends[records]) - np.searchsorted(opens, geo.starts[records])
    return inside > 1


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
    nested = _nested(arr, geo, records)
    unsure = np.zeros(len(records), dtype=bool)
    for name, rows in looked.items():
        if not len(rows):
            continue
        pattern = f'"{name}":'
        texts = lines if len(rows) == len(records) else lines.gather(rows)
        found = texts.str.find(pattern, literal=True).to_numpy()
        hit = ~np.isnan(found) if found.dtype.kind == "f" else np.ones(len(rows), dtype=bool)
        sure = hit & ~nested[rows]
        rec = records[rows[sure]]
        key = geo.starts[rec] + found[sure].astype(np.int64)
        value = _skip_space(arr, key + len(pattern.encode()), geo.ends[rec], 1)
        types[name][rows[sure]] = _BY_FIRST_BYTE[arr[value]]
        escaped = np.zeros(len(rows), dtype=bool)
        escaped[sure] = (key > 0) & (arr[np.maximum(key - 1, 0)] == BACKSLASH)
        unsure[rows[~sure | escaped]] = True
    if unsure.any():
        chosen = np.zeros(len(geo.ends), dtype=bool)
        chosen[records[unsure]] = True
        exact = _scan(arr, geo, chosen, list(looked))
        for name, rows in looked.items():
            redo = rows[unsure[rows]]
            types[name][redo] = exact[name][records[redo]]
