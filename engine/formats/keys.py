"""The top-level keys of a block's JSON records, found with numpy (no Python per record).

Two uses, both opt-in per job (the default reading path never calls this module):

* ``header_case=insensitive``: :func:`fold_keys` lowercases the ASCII letters of every top-level
  key, so the parser's schema of folded names finds ``Email`` and ``EMAIL`` alike;
* ``mode=merge``: :func:`holding` tells which records hold a key at all (``"name": null`` sets
  the field to null; a record without ``name`` leaves it as it is), which the parser cannot tell
  (both read as null).

A top-level key is a string outside other strings, followed (after optional whitespace) by a colon
at object depth 1 of its record. Strings and depth are counted from each record's start, so a
malformed record (an odd number of quotes) cannot mislead the records after it; records that are
not JSON objects get nonsense here, and are error rows anyway. A key written with ``\\u`` escapes
is compared as written (not decoded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.formats.framing import QUOTE, WS, as_array, real_quotes
from engine.formats.records import last_solid

_COLON = 0x3A
_OPENERS = (0x7B, 0x5B)
_CLOSERS = (0x7D, 0x5D)


@dataclass(frozen=True, slots=True)
class Keys:
    """Every top-level key of the records: its opening and closing quote, and its record."""

    opening: np.ndarray
    closing: np.ndarray
    record: np.ndarray


def _record_of(ends: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return np.searchsorted(ends, pos, side="right")


def top_level_keys(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Keys:
    """The top-level keys of the records ``[starts[i], ends[i])`` of ``arr``."""
    empty = np.empty(0, dtype=np.int64)
    colons = np.flatnonzero(arr == _COLON)
    if not len(colons) or not len(ends):
        return Keys(empty, empty, empty)
    quotes = np.flatnonzero(real_quotes(arr))
    at_start = np.searchsorted(quotes, starts)

    def outside(pos: np.ndarray, owner: np.ndarray) -> np.ndarray:
        return ((np.searchsorted(quotes, pos) - at_start[owner]) & 1) == 0

    owner = _record_of(ends, colons)
    inside_records = owner < len(ends)
    colons, owner = colons[inside_records], owner[inside_records]
    keep = outside(colons, owner)
    colons, owner = colons[keep], owner[keep]
    first = starts[owner]
    # A colon outside strings separates a key from its value in some object; when no record
    # holds more than one ``{`` (its own; counted in strings too), every such colon is top-level.
    braces = _record_of(ends, np.flatnonzero(arr == _OPENERS[0]))
    if len(braces) and np.bincount(braces, minlength=len(ends) + 1)[: len(ends)].max() > 1:
        opening_bytes = (arr == _OPENERS[0]) | (arr == _OPENERS[1])
        brackets = np.flatnonzero(opening_bytes | (arr == _CLOSERS[0]) | (arr == _CLOSERS[1]))
        b_owner = _record_of(ends, brackets)
        in_rec = b_owner < len(ends)
        brackets, b_owner = brackets[in_rec], b_owner[in_rec]
        brackets = brackets[outside(brackets, b_owner)]
        is_open = opening_bytes[brackets]
        opens, closes = brackets[is_open], brackets[~is_open]
        depth = (np.searchsorted(opens, colons) - np.searchsorted(opens, first)) - (
            np.searchsorted(closes, colons) - np.searchsorted(closes, first)
        )
        top = depth == 1
        colons, owner, first = colons[top], owner[top], first[top]
    closing = last_solid(arr, first, colons, WS)
    n = len(arr)
    is_quote = (closing >= first) & (arr[np.clip(closing, 0, n - 1)] == QUOTE)
    colons, owner, closing = colons[is_quote], owner[is_quote], closing[is_quote]
    at = np.searchsorted(quotes, closing)
    real = (at < len(quotes)) & (quotes[np.minimum(at, len(quotes) - 1)] == closing)
    real &= at - 1 >= at_start[owner]
    owner, closing, at = owner[real], closing[real], at[real]
    return Keys(quotes[at - 1].astype(np.int64), closing.astype(np.int64), owner.astype(np.int64))


def fold_keys(data: bytes, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """``data`` with the ASCII letters of every top-level key lowercased (a copy; the same
    length, so record offsets stay valid)."""
    arr = as_array(data)
    keys = top_level_keys(arr, starts, ends)
    if not len(keys.opening):
        return data
    edges = np.zeros(len(arr) + 1, dtype=np.int32)
    edges[keys.opening + 1] += 1  # keys do not overlap: each offset once
    edges[keys.closing] -= 1
    in_key = np.cumsum(edges[:-1], dtype=np.int32) > 0
    upper = in_key & (arr >= 0x41) & (arr <= 0x5A)
    if not upper.any():
        return data
    out = arr.copy()
    out[upper] += 0x20
    return out.tobytes()


def holding(
    data: bytes, starts: np.ndarray, ends: np.ndarray, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per name: a bool per record, whether it holds that top-level key (written as is)."""
    arr = as_array(data)
    keys = top_level_keys(arr, starts, ends)
    length = keys.closing - keys.opening - 1
    out = {}
    for name in names:
        raw = name.encode("utf-8")
        picked = np.flatnonzero(length == len(raw))
        for j, byte in enumerate(raw):
            picked = picked[arr[keys.opening[picked] + 1 + j] == byte]
        held = np.zeros(len(ends), dtype=bool)
        held[keys.record[picked]] = True
        out[name] = held
    return out
