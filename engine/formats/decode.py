"""Bytes in, decoded bytes out: transparent streaming gzip with a cap, BOM removal.

Readers never see compressed data or a BOM. Decompression is bounded per call
(``_STEP`` bytes of output) so a gzip bomb cannot blow up memory before the cap trips, and its
cost is linear in the input whatever the members' sizes (see :func:`_gunzip`). ``tick`` is called
for every stored chunk read, every ``TICK_STEPS`` decompression calls and every ``TICK_BYTES`` of
output, so a caller can check its lease, a cancel or a shutdown while the reader produces nothing
it can commit (a long run of empty members, or of whitespace).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator

from engine.errors import DecompressedTooLarge

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
#: Largest piece of output one decompress call may produce.
_STEP = 4 * 1024 * 1024
#: Compressed bytes handed to one decompress call: at first, after a member of ``m`` bytes
#: ``2 m`` (at least ``_MIN_WINDOW``), doubled while a member goes on, at most ``_MAX_WINDOW``.
#: zlib copies what follows a member's end into ``unused_data``: handing it a whole 4 MiB chunk
#: copied the rest of the chunk at every member's end, quadratic in the members (an 8 MB upload
#: of 400,000 empty members kept a worker busy for 28 s). With windows sized by the members
#: around them, the copies add up to a few times the input.
_MIN_WINDOW = 64
_MAX_WINDOW = 1024 * 1024
#: ``tick()`` is called at least every ``TICK_STEPS`` decompress calls (an empty member is one)
#: and every ``TICK_BYTES`` of output.
TICK_STEPS = 256
TICK_BYTES = 4 * 1024 * 1024
_BYTES_PER_STEP = TICK_BYTES // TICK_STEPS
#: Small outputs (tiny members) are gathered up to this size before they are handed on: every
#: chunk costs the framer a few numpy calls, whatever its size.
_MIN_YIELD = 256 * 1024

Tick = Callable[[], None]


def _nothing() -> None:
    return None


def _gunzip(chunks: Iterator[bytes], first: bytes, max_bytes: int, tick: Tick) -> Iterator[bytes]:
    total = 0
    # wbits=31: one gzip member per decompressor; concatenated members follow one another.
    inflater = zlib.decompressobj(31)
    fed = False  # has the current gzip member received any input?
    member = 0  # compressed bytes of the current member so far
    window = _MIN_WINDOW
    work = 0  # since the last tick: one per call, one per _BYTES_PER_STEP of output
    data = memoryview(first)
    pos = 0
    gathered = bytearray()
    while True:
        full = False  # the last call filled its output: zlib may hold more without more input
        while pos < len(data) or full:
            piece = data[pos : pos + window]
            out = inflater.decompress(piece, _STEP)
            fed = fed or len(piece) > 0
            work += 1 + len(out) // _BYTES_PER_STEP
            if work >= TICK_STEPS:
                tick()
                work = 0
            if inflater.eof:
                used = len(piece) - len(inflater.unused_data)
                window = min(max(2 * (member + used), _MIN_WINDOW), _MAX_WINDOW)
                inflater = zlib.decompressobj(31)
                fed = False
                member = 0
                full = False
            else:
                # Input left unread because the output was full is handed again next time.
                used = len(piece) - len(inflater.unconsumed_tail)
                member += used
                full = len(out) >= _STEP
                if used == len(piece):
                    window = min(window * 2, _MAX_WINDOW)
            pos += used
            if out:
                total += len(out)
                if total > max_bytes:
                    raise DecompressedTooLarge(
                        f"the gzip file expands to more than {max_bytes} bytes "
                        "(BULKIO_MAX_DECOMPRESSED_BYTES); split it or raise the limit"
                    )
                if gathered or len(out) < _MIN_YIELD:
                    gathered += out
                    if len(gathered) < _MIN_YIELD:
                        continue
                    out = bytes(gathered)
                    gathered.clear()
                yield out
        pending = next(chunks, b"")
        if not pending:
            break
        data = memoryview(pending)  # the loop above consumed ``data`` to its end
        pos = 0
    if fed and not inflater.eof:
        raise zlib.error("the gzip stream is truncated (the upload may be incomplete)")
    if gathered:
        yield bytes(gathered)


def _ticking(chunks: Iterable[bytes], tick: Tick) -> Iterator[bytes]:
    for chunk in chunks:
        tick()
        yield bytes(chunk)


def decoded(chunks: Iterable[bytes], max_bytes: int, tick: Tick | None = None) -> Iterator[bytes]:
    """Yield the file's bytes, gunzipped when it starts with the gzip magic, without a BOM.

    ``tick`` (optional) is called for every chunk read from ``chunks`` and every
    ``TICK_STEPS`` decompression calls; it may raise to stop reading."""
    from engine.errors import FileError

    tick = tick or _nothing
    it = _ticking(chunks, tick)
    first = b""
    for chunk in it:
        first += chunk
        if len(first) >= 3:
            break
    body: Iterator[bytes]
    if first.startswith(GZIP_MAGIC):

        def guarded() -> Iterator[bytes]:
            try:
                yield from _gunzip(it, first, max_bytes, tick)
            except zlib.error as exc:
                raise FileError(
                    f"the file looks like gzip but cannot be decompressed: {exc}"
                ) from exc

        body = guarded()
    else:
        body = _chain(first, it)
    head = b""
    for chunk in body:
        head += chunk
        if len(head) >= 3:
            break
    if head.startswith(UTF8_BOM):
        head = head[3:]
    if head:
        yield head
    yield from body


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
