"""Compression of an export's bytes, chunk by chunk: gzip (zlib) or zstd (pyarrow).

Each compressor takes the writer's chunks as they come and hands back what is ready (possibly
nothing), then ``flush()`` ends the stream. Both keep a bounded amount of state (zlib's window;
zstd's window plus a 64 KiB output buffer), so an export of any size streams in constant memory.
The zstd output is a single frame, which every zstd decoder reads (some stop after the first
frame of a multi-frame stream).
"""

from __future__ import annotations

import io
import zlib
from typing import Protocol

import pyarrow as pa

#: Compressions an export can be written with (``compression=`` / ``Accept-Encoding``).
COMPRESSIONS = ("gzip", "zstd")
#: File name suffix of an export written as a compressed file.
SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}
#: zlib level for gzip output: level 1 is ~3x faster than 6 for ~10% larger files.
GZIP_LEVEL = 1


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes:
        """Take ``data``; return the compressed bytes ready so far (maybe none)."""
        ...

    def flush(self) -> bytes:
        """End the stream; return the rest."""
        ...


class _Gzip:
    def __init__(self) -> None:
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._zlib.compress(data)

    def flush(self) -> bytes:
        return self._zlib.flush()


class _Drain(io.RawIOBase):
    """Where pyarrow's compressed stream writes; emptied after every call."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class _Zstd:
    """At pyarrow's level for zstd streams (1, which its stream cannot change): about as fast as
    gzip level 1, and smaller."""

    def __init__(self) -> None:
        self._sink = _Drain()
        self._stream = pa.CompressedOutputStream(pa.PythonFile(self._sink, mode="w"), "zstd")

    def compress(self, data: bytes) -> bytes:
        if data:
            self._stream.write(data)
        return self._sink.take()

    def flush(self) -> bytes:
        self._stream.close()  # writes the end of the frame, then closes the drain
        return self._sink.take()


def compressor(name: str) -> Compressor:
    """A fresh compressor for ``name`` (one of :data:`COMPRESSIONS`)."""
    if name == "gzip":
        return _Gzip()
    if name == "zstd":
        return _Zstd()
    raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}; got {name!r}")
