"""Per-record geometry of a block: where each record starts, its file line, whether it is blank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.formats.framing import _WS, NL, Block, as_array


@dataclass(frozen=True, slots=True)
class Layout:
    starts: np.ndarray  #: record start offsets in the block (int64)
    ends: np.ndarray  #: record end offsets (exclusive)
    blank: np.ndarray  #: bool: record holds only whitespace (not counted as a row)
    lines: np.ndarray  #: 1-based file line of each record's first non-blank byte


def layout(block: Block) -> Layout:
    arr = as_array(block.data)
    ends = block.ends.astype(np.int64)
    starts = np.concatenate(([0], ends[:-1])).astype(np.int64)
    solid = np.flatnonzero(~_WS[arr])
    if len(solid):
        idx = np.searchsorted(solid, starts)
        first = np.where(idx < len(solid), solid[np.minimum(idx, len(solid) - 1)], len(arr))
    else:  # a block of blank records only (indexing ``solid`` would fail)
        first = np.full(len(starts), len(arr), dtype=np.int64)
    blank = first >= ends
    newlines = np.flatnonzero(arr == NL)
    anchor = np.where(blank, starts, first)
    lines = block.lines_before + np.searchsorted(newlines, anchor) + 1
    return Layout(starts, ends, blank, lines.astype(np.int64))
