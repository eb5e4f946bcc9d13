"""Gzip files of many small members (issue #8): decoding costs work linear in the input, small
outputs are handed on in few pieces, and the caller is called back while nothing comes out.

Work is counted, not timed: the bytes handed to zlib (which copies what follows a member's end)
and the pieces handed on to the framer.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from engine.formats import decode
from engine.formats.decode import decoded

EMPTY = gzip.compress(b"", mtime=0)  # 20 bytes, no output


class _Counted:
    """A zlib decompressor that adds the input bytes of every call to ``fed[0]``."""

    def __init__(self, fed: list[int], wbits: int) -> None:
        self._inner = zlib.decompressobj(wbits)
        self._fed = fed

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        self._fed[0] += len(data)
        return self._inner.decompress(data, max_length)

    def __getattr__(self, name: str) -> Any:  # eof, unused_data, unconsumed_tail
        return getattr(self._inner, name)


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes handed to zlib by ``engine.formats.decode`` (its own zlib name only)."""
    counter = [0]
    spy = SimpleNamespace(
        decompressobj=lambda wbits=15: _Counted(counter, wbits),
        error=zlib.error,
    )
    monkeypatch.setattr(decode, "zlib", spy)
    return counter


def _decode_all(data: bytes, **kw: Any) -> list[bytes]:
    return list(decoded(iter([data]), 1 << 40, **kw))


def test_empty_members_cost_input_bytes_linear_in_their_number(fed: list[int]) -> None:
    """4x the members must cost ~4x the bytes handed to zlib (the old decoder handed it the rest
    of the chunk at every member's end: 16x)."""
    counts = {}
    for members in (2_000, 8_000):
        fed[0] = 0
        assert _decode_all(EMPTY * members) == []
        counts[members] = fed[0]
    assert counts[8_000] <= 4.5 * counts[2_000], counts
    assert counts[8_000] <= 8 * len(EMPTY) * 8_000, counts


def test_members_of_mixed_sizes_stay_linear(fed: list[int]) -> None:
    """Big members between tiny ones: windows grow for the big and shrink again for the tiny."""
    big = gzip.compress(bytes(range(256)) * 4000, mtime=0)  # ~1 MB out, a few KB in
    data = (EMPTY * 3000 + big) * 4
    out = b"".join(_decode_all(data))
    assert out == bytes(range(256)) * 4000 * 4
    assert fed[0] <= 8 * len(data), (fed[0], len(data))


def test_tiny_members_are_handed_on_in_few_pieces() -> None:
    """10,000 one-byte members: the framer gets a few pieces, not 10,000 (each costs it a few
    numpy calls)."""
    one = gzip.compress(b"\n", mtime=0)
    pieces = _decode_all(one * 10_000)
    assert b"".join(pieces) == b"\n" * 10_000
    assert len(pieces) <= 2, len(pieces)


def test_tick_is_called_while_empty_members_produce_nothing() -> None:
    members = 100_000
    ticks = [0]

    def tick() -> None:
        ticks[0] += 1

    assert _decode_all(EMPTY * members, tick=tick) == []
    assert ticks[0] >= members // decode.TICK_STEPS, ticks


def test_tick_is_called_while_one_chunk_expands_to_much_output() -> None:
    """A few KB of gzip expanding to 64 MiB of whitespace: ticks every ``TICK_BYTES`` of output
    (an earlier version counted calls only: 16 calls for 64 MiB, no tick)."""
    ticks = [0]

    def tick() -> None:
        ticks[0] += 1

    size = 64 * 1024 * 1024
    out = sum(len(p) for p in _decode_all(gzip.compress(b" " * size, mtime=0), tick=tick))
    assert out == size
    assert ticks[0] >= size // decode.TICK_BYTES - 1, ticks


def test_tick_is_called_for_every_chunk_read() -> None:
    ticks = [0]

    def tick() -> None:
        ticks[0] += 1

    chunks = [b"x" * 100] * 50
    assert b"".join(decoded(iter(chunks), 1 << 40, tick)) == b"x" * 5000
    assert ticks[0] == 50


def test_a_tick_that_raises_stops_decoding() -> None:
    class Stop(Exception):
        pass

    def tick() -> None:
        raise Stop

    with pytest.raises(Stop):
        _decode_all(EMPTY * 10_000, tick=tick)


def test_output_filling_the_step_exactly_is_not_taken_for_truncation() -> None:
    """A member whose output ends exactly at a step boundary with no input left: zlib may hold
    the member's end; the decoder must ask for it instead of calling the stream truncated."""
    raw = b"a" * (2 * decode._STEP)
    data = gzip.compress(raw, mtime=0)
    for size in (1, len(data) // 3, len(data)):
        chunks: Iterator[bytes] = (data[i : i + size] for i in range(0, len(data), size))
        assert b"".join(decoded(chunks, 1 << 40)) == raw


def test_read_batches_reports_progress_while_skipping_to_a_checkpoint() -> None:
    """A job resumed deep into a gzip file decompresses everything before its checkpoint without
    producing a batch: the reader's progress hook is called all along (a hook that raises, as the
    runner's does on a shutdown, stops it there)."""
    from engine.formats.reader import read_batches

    rows = b"".join(b'{"id": "%d"}\n' % i for i in range(20_000))
    data = EMPTY * 50_000 + gzip.compress(rows, mtime=0) + gzip.compress(b'{"id": "last"}\n')
    kw: dict[str, Any] = {"batch_rows": 10_000, "max_record_bytes": 1 << 20,
                          "max_decompressed_bytes": 1 << 40}  # fmt: skip
    batches = list(read_batches([data], "ndjson", ["id"], [], **kw))
    checkpoint = batches[1].after  # after the empty members and the first 20,000 rows
    calls = [0]

    def progress() -> None:
        calls[0] += 1

    resumed = list(read_batches([data], "ndjson", ["id"], [], start=checkpoint,
                                on_progress=progress, **kw))  # fmt: skip
    assert [b.frame["id"].to_list() for b in resumed] == [["last"]]
    assert calls[0] >= 50_000 // decode.TICK_STEPS, calls

    class Stop(Exception):
        pass

    def stop() -> None:
        raise Stop

    with pytest.raises(Stop):
        list(read_batches([data], "ndjson", ["id"], [], start=checkpoint, on_progress=stop, **kw))
