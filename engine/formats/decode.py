"""Bytes in, decoded bytes out: transparent streaming gzip with a cap, BOM removal.

Readers never see compressed data or a BOM. Decompression is bounded per call
(``_STEP`` bytes of output) so a gzip bomb cannot blow up memory before the cap trips.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from engine.errors import DecompressedTooLarge

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
#: Largest piece of output one decompress call may produce.
_STEP = 4 * 1024 * 1024


def _gunzip(chunks: Iterator[bytes], first: bytes, max_bytes: int) -> Iterator[bytes]:
    total = 0
    # wbits=31: gzip container; concatenated members are handled through unused_data.
    inflater = zlib.decompressobj(31)
    fed = False  # has the current gzip member received any input?
    pending = first
    while True:
        data = pending
        while data:
            fed = True
            out = inflater.decompress(data, _STEP)
            data = inflater.unconsumed_tail
            if inflater.eof:
                rest = inflater.unused_data
                inflater = zlib.decompressobj(31)
                fed = False
                data = data + rest if data else rest
            if out:
                total += len(out)
                if total > max_bytes:
                    raise DecompressedTooLarge(
                        f"the gzip file expands to more than {max_bytes} bytes "
                        "(BULKIO_MAX_DECOMPRESSED_BYTES); split it or raise the limit"
                    )
                yield out
        pending = next(chunks, b"")
        if not pending:
            break
    if fed and not inflater.eof:
        raise zlib.error("the gzip stream is truncated (the upload may be incomplete)")


def decoded(chunks: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """Yield the file's bytes, gunzipped when it starts with the gzip magic, without a BOM."""
    from engine.errors import FileError

    it = iter(chunks)
    first = b""
    for chunk in it:
        first += bytes(chunk)
        if len(first) >= 3:
            break
    body: Iterator[bytes]
    if first.startswith(GZIP_MAGIC):

        def guarded() -> Iterator[bytes]:
            try:
                yield from _gunzip((bytes(c) for c in it), first, max_bytes)
            except zlib.error as exc:
                raise FileError(
                    f"the file looks like gzip but cannot be decompressed: {exc}"
                ) from exc

        body = guarded()
    else:
        body = _chain(first, (bytes(c) for c in it))
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
