"""Bytes in, decoded bytes out: transparent streaming gzip and zstd with a cap, BOM removal.

Readers never see compressed data or a BOM. The compression is told by the file's first bytes
(gzip ``1f 8b``, zstd ``28 b5 2f fd``), never by its name. Decompression is bounded per call
(``_STEP`` bytes of output) so a bomb cannot blow up memory before the cap trips, and its
cost is linear in the input whatever the members' or frames' sizes (see :func:`_gunzip` and
:func:`_unzstd`). ``tick`` is called
for every stored chunk read, every ``TICK_STEPS`` decompression calls and every ``TICK_BYTES`` of
output, so a caller can check its lease, a cancel or a shutdown while the reader produces nothing
it can commit (a long run of empty members, or of whitespace).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa

from engine.errors import DecompressedTooLarge, FileError
from engine.formats import PARQUET_MAGIC

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
UTF8_BOM = b"\xef\xbb\xbf"
#: Largest window a zstd frame may ask for: zstd's own default limit for streaming decoders
#: (``ZSTD_WINDOWLOG_LIMIT_DEFAULT``, 2^27), which pyarrow keeps. Frames written by
#: ``zstd --long=28`` or more are refused with a message saying so.
ZSTD_MAX_WINDOW = 128 * 1024 * 1024
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


class _ChunkFile(io.RawIOBase):
    """``chunks`` (after ``first``) as a readable file for pyarrow's decompressing stream. An
    exception of the chunks' source (storage, or ``tick`` stopping the reader) is kept in
    ``failed``: it passes through pyarrow unchanged, and must not be taken for a zstd error."""

    def __init__(self, chunks: Iterator[bytes], first: bytes) -> None:
        self._chunks = chunks
        self._data = memoryview(first)
        self.failed: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._data:  # an empty chunk is not the end
            try:
                chunk = next(self._chunks, None)
            except BaseException as exc:
                self.failed = exc
                raise
            if chunk is None:
                return 0
            self._data = memoryview(chunk)
        n = min(len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def _zstd_error(exc: OSError) -> FileError:
    text = str(exc)
    if "Truncated" in text:
        return FileError("the zstd stream is truncated (the upload may be incomplete)")
    if "too much memory" in text:
        return FileError(
            f"a zstd frame of the file needs a window larger than {ZSTD_MAX_WINDOW // 2**20} MiB "
            "(compressed with zstd --long=28 or more): recompress it with a smaller window"
        )
    return FileError(f"the file looks like zstd but cannot be decompressed: {text}")


def _unzstd(chunks: Iterator[bytes], first: bytes, max_bytes: int, tick: Tick) -> Iterator[bytes]:
    """zstd frames one after another, through pyarrow's streaming decompressor (Python 3.11 has
    no zstd module). It reads 64 KiB of input at a time and starts a fresh frame where one
    ends, without copying what follows (400,000 empty frames: 0.03 s), and hands out at most
    ``_STEP`` bytes per read: memory stays at one window (at most ``ZSTD_MAX_WINDOW``) plus one
    step whatever the frames expand to."""
    source = _ChunkFile(chunks, first)
    stream = pa.CompressedInputStream(pa.PythonFile(source, mode="r"), "zstd")
    total = 0
    try:
        while True:
            try:
                out = stream.read(_STEP)
            except OSError as exc:
                if source.failed is not None:
                    raise
                raise _zstd_error(exc) from exc
            if not out:
                return
            total += len(out)
            if total > max_bytes:
                raise DecompressedTooLarge(
                    f"the zstd file expands to more than {max_bytes} bytes "
                    "(BULKIO_MAX_DECOMPRESSED_BYTES); split it or raise the limit"
                )
            tick()  # every _STEP (= TICK_BYTES) of output; every chunk read ticks too
            yield out
    finally:
        stream.close()


def compressed_parquet(first: bytes) -> FileError:
    """The error for a Parquet file inside gzip or zstd (``first``: the file's first bytes)."""
    kind = "gzip" if first.startswith(GZIP_MAGIC) else "zstd"
    return FileError(
        f"the file is a {kind}-compressed Parquet file: Parquet compresses its own pages and is "
        "read at random places, so upload the .parquet file itself, uncompressed"
    )


def _ticking(chunks: Iterable[bytes], tick: Tick) -> Iterator[bytes]:
    for chunk in chunks:
        tick()
        yield bytes(chunk)


def decoded(chunks: Iterable[bytes], max_bytes: int, tick: Tick | None = None) -> Iterator[bytes]:
    """Yield the file's bytes, decompressed when it starts with the gzip or zstd magic, without
    a BOM. A compressed Parquet file is refused: Parquet compresses its own pages and needs
    random access (upload the ``.parquet`` file itself).

    ``tick`` (optional) is called for every chunk read from ``chunks`` and every
    ``TICK_STEPS`` decompression calls; it may raise to stop reading."""
    tick = tick or _nothing
    it = _ticking(chunks, tick)
    first = b""
    for chunk in it:
        first += chunk
        if len(first) >= len(ZSTD_MAGIC):
            break
    body: Iterator[bytes]
    compressed = first.startswith((GZIP_MAGIC, ZSTD_MAGIC))
    if first.startswith(GZIP_MAGIC):

        def guarded() -> Iterator[bytes]:
            try:
                yield from _gunzip(it, first, max_bytes, tick)
            except zlib.error as exc:
                raise FileError(
                    f"the file looks like gzip but cannot be decompressed: {exc}"
                ) from exc

        body = guarded()
    elif first.startswith(ZSTD_MAGIC):
        body = _unzstd(it, first, max_bytes, tick)
    else:
        body = _chain(first, it)
    head = b""
    for chunk in body:
        head += chunk
        if len(head) >= len(PARQUET_MAGIC):
            break
    if compressed and head.startswith(PARQUET_MAGIC):
        raise compressed_parquet(first)
    if head.startswith(UTF8_BOM):
        head = head[3:]
    if head:
        yield head
    yield from body


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
