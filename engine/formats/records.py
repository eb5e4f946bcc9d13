"""Per-record geometry of a block: where each record starts, its file line, whether it is blank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.formats.framing import NL, WS, Block, as_array


@dataclass(frozen=True, slots=True)
class Layout:
    starts: np.ndarray  #: record start offsets in the block (int64)
    ends: np.ndarray  #: record end offsets (exclusive)
    blank: np.ndarray  #: bool: record holds only whitespace (not counted as a row)
    lines: np.ndarray  #: 1-based file line of each record's first non-blank byte


#: Leading/trailing gap bytes stepped over with vectorised steps; longer gaps (rare, hostile)
#: are measured one record at a time with bytes.lstrip/rstrip.
_VECTOR_STEPS = 64


def _walk(
    arr: np.ndarray, pos: np.ndarray, limit: np.ndarray, gap: np.ndarray, step: int
) -> np.ndarray:
    """Move each position by ``step`` while it is on a ``gap`` byte and short of ``limit``."""
    pos = pos.copy()
    n = len(arr)

    def moving(idx: np.ndarray) -> np.ndarray:
        p = pos[idx]
        inside = (p < limit[idx]) if step > 0 else (p > limit[idx])
        ok = inside & (p >= 0) & (p < n)
        return idx[ok][gap[arr[p[ok]]]]

    todo = moving(np.arange(len(pos)))
    for _ in range(_VECTOR_STEPS):
        if not len(todo):
            return pos
        pos[todo] += step
        todo = moving(todo)
    table = bytes(np.flatnonzero(gap).astype(np.uint8))
    data = arr.tobytes() if len(todo) else b""
    for i in todo.tolist():  # only records with a gap longer than _VECTOR_STEPS bytes
        if step > 0:
            chunk = data[pos[i] : limit[i]]
            pos[i] += len(chunk) - len(chunk.lstrip(table))
        else:
            chunk = data[limit[i] + 1 : pos[i] + 1]
            pos[i] -= len(chunk) - len(chunk.rstrip(table))
    return pos


def first_solid(
    arr: np.ndarray, starts: np.ndarray, ends: np.ndarray, gap: np.ndarray
) -> np.ndarray:
    """Offset of each record's first non-``gap`` byte (``end`` when it has none)."""
    return _walk(arr, starts, ends, gap, 1)


def last_solid(
    arr: np.ndarray, starts: np.ndarray, ends: np.ndarray, gap: np.ndarray
) -> np.ndarray:
    """Offset of each record's last non-``gap`` byte (``start - 1`` when it has none)."""
    return _walk(arr, ends - 1, starts - 1, gap, -1)


def layout(block: Block) -> Layout:
    arr = as_array(block.data)
    ends = block.ends.astype(np.int64)
    starts = np.concatenate(([0], ends[:-1])).astype(np.int64)
    first = first_solid(arr, starts, ends, WS)
    blank = first >= ends
    newlines = np.flatnonzero(arr == NL)
    anchor = np.where(blank, starts, first)
    lines = block.lines_before + np.searchsorted(newlines, anchor) + 1
    return Layout(starts, ends, blank, lines.astype(np.int64))
