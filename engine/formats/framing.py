"""Cut a decoded byte stream into blocks of whole records, vectorised with numpy.

A *framer* scans bytes incrementally and reports where records end; :func:`blocks` groups
``batch_rows`` records into one :class:`Block`. Batch boundaries depend only on the file and
``batch_rows``, so a resumed job cuts exactly the same batches as the first attempt.

- CSV: a newline ends a record only outside quotes (RFC 4180 doubles quotes inside a quoted field,
  so the running parity of ``"`` is exactly "inside a quoted field").
- NDJSON: every newline ends a record (JSON strings cannot hold a raw newline).
- JSON array: a comma at depth 1 outside strings ends a record; ``]`` at depth 1 ends the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.errors import FileError, RecordTooLarge

NL = 0x0A
QUOTE = 0x22
BACKSLASH = 0x5C
WS = np.zeros(256, dtype=bool)
WS[[0x20, 0x09, 0x0A, 0x0D]] = True


def as_array(data: bytes | bytearray | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def running_parity(mask: np.ndarray) -> np.ndarray:
    """Bool: an odd number of ``mask`` bytes up to and including each position.

    A uint8 cumulative sum wraps at 256 but keeps parity, and costs one byte per input byte
    where int64 cost eight (measured: 35 MB blocks peaked the worker at 1 GB)."""
    return (np.cumsum(mask, dtype=np.uint8) & 1).view(bool)


def parity_at(marks: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bool per position: an odd number of ``marks`` (sorted offsets) before it.

    For sparse marks (CSV quotes) a binary search per asked position is several times cheaper
    than :func:`running_parity` over every byte (py-spy: its cumsum was 0.65 s of a 1M-user
    import)."""
    return (np.searchsorted(marks, positions) & 1).astype(bool)


def nesting(opens: np.ndarray, closes: np.ndarray, start: int = 0) -> np.ndarray:
    """Depth after each byte: ``start`` + opens so far - closes so far (int32)."""
    step = opens.view(np.int8) - closes.view(np.int8)
    return np.cumsum(step, dtype=np.int32) + np.int32(start)


class Framer(Protocol):
    #: no more records can follow (a JSON array's closing ``]`` was seen)
    closed: bool

    def scan(self, data: np.ndarray) -> np.ndarray:
        """Return end offsets (exclusive, relative to ``data``) of records completed in ``data``."""
        ...

    def finish(self, tail: np.ndarray) -> bool:
        """At end of input: whether the unterminated ``tail`` is a final record."""
        ...


class LineFramer:
    """NDJSON: one record per line."""

    closed = False

    def scan(self, data: np.ndarray) -> np.ndarray:
        return np.flatnonzero(data == NL) + 1

    def finish(self, tail: np.ndarray) -> bool:
        return bool((~WS[tail]).any())


class CsvFramer:
    """CSV: newlines outside quoted fields end records."""

    closed = False

    def __init__(self) -> None:
        self.in_quotes = False

    def scan(self, data: np.ndarray) -> np.ndarray:
        quotes = np.flatnonzero(data == QUOTE)
        newlines = np.flatnonzero(data == NL)
        ends = newlines[parity_at(quotes, newlines) == self.in_quotes] + 1
        self.in_quotes = bool(len(quotes) & 1) != self.in_quotes
        return ends

    def finish(self, tail: np.ndarray) -> bool:
        if self.in_quotes:
            raise FileError("the CSV file ends inside a quoted field (an unbalanced quote)")
        return bool((~WS[tail]).any())


def real_quotes(data: np.ndarray, carried_backslashes: int = 0) -> np.ndarray:
    """Mask of ``"`` bytes that are not escaped by an odd run of backslashes."""
    mask = data == QUOTE
    quotes = np.flatnonzero(mask)
    # Walk back from the quotes that follow a backslash only, one step per backslash of the
    # longest run (runs are short), counting the run before each of them.
    escaped = quotes[(quotes > 0) & (data[np.maximum(quotes - 1, 0)] == BACKSLASH)]
    if carried_backslashes and len(quotes) and quotes[0] == 0:
        escaped = np.concatenate(([0], escaped))
    run = np.zeros(len(escaped), dtype=np.int64)
    active = np.ones(len(escaped), dtype=bool)
    step = 1
    while active.any():
        pos = escaped - step
        at_start = active & (pos < 0)
        run[at_start] += carried_backslashes
        active &= pos >= 0
        active[active] = data[pos[active]] == BACKSLASH
        run[active] += 1
        step += 1
    mask[escaped[run % 2 == 1]] = False
    return mask


class JsonArrayFramer:
    """JSON array: records are the array's elements; the header is everything up to ``[``."""

    def __init__(self) -> None:
        self.in_string = False
        self.depth = 1  # scanning starts just after the opening '['
        self.backslashes = 0
        self.closed = False

    def scan(self, data: np.ndarray) -> np.ndarray:
        if self.closed:
            if (~WS[data]).any():
                raise FileError("unexpected data after the end of the JSON array")
            return np.empty(0, dtype=np.int64)
        quotes = real_quotes(data, self.backslashes)
        parity = running_parity(quotes)
        inside = ~parity if self.in_string else parity
        # For a non-quote byte ``inside`` is the string state around it; quotes are not structure.
        outside = ~inside & ~quotes
        opens = outside & ((data == 0x7B) | (data == 0x5B))
        closes = outside & ((data == 0x7D) | (data == 0x5D))
        depth = nesting(opens, closes, self.depth)
        ends = np.flatnonzero(outside & (data == 0x2C) & (depth == 1)) + 1
        close_at = np.flatnonzero(closes & (depth == 0))
        if len(close_at):
            pos = int(close_at[0])
            if (~WS[data[pos + 1 :]]).any():
                raise FileError("unexpected data after the end of the JSON array")
            self.closed = True
            return np.append(ends[ends <= pos], pos)
        if len(data):
            self.in_string = bool(inside[-1])
            self.depth = int(depth[-1])
            plain = np.flatnonzero(data != BACKSLASH)
            if len(plain):
                self.backslashes = len(data) - 1 - int(plain[-1])
            else:
                self.backslashes += len(data)
        return ends

    def finish(self, tail: np.ndarray) -> bool:
        if not self.closed:
            raise FileError("the JSON array is not closed: the file ends before its final ']'")
        return False


@dataclass(frozen=True, slots=True)
class Block:
    """``batch_rows`` (or fewer, at the end) whole records, with where they sit in the file."""

    index: int
    data: bytes
    #: record end offsets, relative to ``data`` (the last one is ``len(data)`` or less)
    ends: np.ndarray
    #: absolute offset of ``data[0]`` in the decoded file
    offset: int
    #: newlines in the file before ``data[0]``
    lines_before: int


def _check_lengths(
    buf: bytearray, ends: np.ndarray, previous: int, max_record_bytes: int, lines_before: int
) -> None:
    """Records that end in one chunk are checked here, unfinished ones while they grow, so the
    cap does not depend on chunk sizes. A length excludes the terminator (newline or comma)."""
    lengths = np.diff(ends, prepend=previous) - 1
    if len(lengths) and int(lengths.max()) > max_record_bytes:
        first = int(np.flatnonzero(lengths > max_record_bytes)[0])
        start = previous if first == 0 else int(ends[first - 1])
        raise _too_large(buf, start, lines_before, max_record_bytes)


def _too_large(buf: bytearray, start: int, lines_before: int, limit: int) -> RecordTooLarge:
    line = lines_before + buf.count(b"\n", 0, start) + 1
    if not (~WS[as_array(memoryview(buf)[start : start + limit + 1])]).any():
        return RecordTooLarge(
            f"more than {limit} bytes of nothing but whitespace from line {line} on "
            "(BULKIO_MAX_RECORD_BYTES): remove the blank run or raise the limit"
        )
    return RecordTooLarge(
        f"a record starting on line {line} is longer than {limit} bytes "
        "(BULKIO_MAX_RECORD_BYTES); for CSV this usually means an unbalanced quote"
    )


def blocks(
    chunks: Iterator[bytes],
    framer: Framer,
    *,
    batch_rows: int,
    max_record_bytes: int,
    offset: int,
    lines_before: int,
    first_index: int,
    batch_bytes: int = 1 << 62,
) -> Iterator[Block]:
    """Group framed records into blocks of ``batch_rows`` records, or fewer when they would pass
    ``batch_bytes`` (wide records: memory per batch stays bounded). ``offset``: where ``chunks``
    start. A cut depends only on the records from the block's start, never on how the input was
    chunked, so a job resumed at a block boundary cuts the same blocks.

    Work is linear in the input however many records one chunk holds (a chunk of blank lines
    holds millions): the record ends found so far are one array, cut by moving an index."""

    def take(ends: np.ndarray, origin: int, buffered: int, eof: bool) -> int:
        """Records to cut now from ``ends`` (offsets in ``buf``; the block starts at ``origin``,
        ``buffered`` bytes follow it); 0: not decidable yet."""
        if len(ends) >= batch_rows or buffered >= batch_bytes or eof:
            fitting = int(np.searchsorted(ends, origin + batch_bytes, side="right"))
            k = min(batch_rows, max(fitting, 1), len(ends))
            return k if (k == batch_rows or buffered >= batch_bytes or eof) else 0
        return 0

    buf = bytearray()
    base = offset  # absolute offset of buf[0]
    scanned = 0
    ends = np.empty(0, dtype=np.int64)  # ends of the records not cut yet, offsets in buf
    index = first_index

    def cut(eof: bool) -> Iterator[Block]:
        """Yield the blocks decidable now; then drop their bytes and ends."""
        nonlocal buf, base, scanned, ends, index, lines_before
        done = 0  # records cut
        origin = 0  # where the next block starts in buf
        while done < len(ends) and (k := take(ends[done:], origin, len(buf) - origin, eof)):
            taken = ends[done : done + k]
            end = int(taken[-1])
            data = bytes(memoryview(buf)[origin:end])
            yield Block(index, data, taken - origin, base + origin, lines_before)
            lines_before += data.count(b"\n")
            origin = end
            done += k
            index += 1
        if origin:
            del buf[:origin]
            base += origin
            scanned -= origin
            ends = ends[done:] - origin

    for chunk in chunks:
        buf += chunk
        new = framer.scan(as_array(memoryview(buf)[scanned:])) + scanned
        scanned = len(buf)
        previous = int(ends[-1]) if len(ends) else 0
        # A JSON array's closing ']' right after a ',' (or at a resumed start) would end an
        # empty record: dropping it keeps batches the same whatever the checkpoint.
        new = new[new > previous]
        if len(new):
            _check_lengths(buf, new, previous, max_record_bytes, lines_before)
            ends = np.concatenate((ends, new)) if len(ends) else new.astype(np.int64)
        yield from cut(eof=False)
        last_end = int(ends[-1]) if len(ends) else 0
        if framer.closed:  # only whitespace may follow (the framer checked): nothing to keep
            del buf[max(last_end, 0) :]
            scanned = len(buf)
        elif len(buf) - last_end > max_record_bytes:
            raise _too_large(buf, last_end, lines_before, max_record_bytes)
    last_end = int(ends[-1]) if len(ends) else 0
    if framer.finish(as_array(memoryview(buf)[last_end:])):
        ends = np.append(ends, len(buf))
    yield from cut(eof=True)
