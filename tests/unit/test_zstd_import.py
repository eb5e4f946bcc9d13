"""zstd uploads (issue #12): told by their magic bytes, decoded streaming with the same
decompressed-size cap as gzip, frames read one after another; broken streams fail with a clear
message, and a compressed Parquet file is refused. No servers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from engine.errors import DecompressedTooLarge, FileError
from engine.formats import detect_format
from engine.formats.decode import decoded
from engine.formats.reader import read_batches

COLS = ["id", "name", "x"]


def zstd(data: bytes) -> bytes:
    """One zstd frame (pyarrow's codec: the format any zstd tool writes)."""
    return pa.Codec("zstd").compress(data, asbytes=True)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def read(data: bytes, fmt: str, *, chunk: int = 7, cap: int = 10**9) -> list[dict]:
    batches = read_batches(
        chunked(data, chunk),
        fmt,
        COLS,
        ["id"] if fmt == "csv" else [],
        batch_rows=1000,
        max_record_bytes=4096,
        max_decompressed_bytes=cap,
    )
    return [r for b in batches for r in b.frame.select(COLS).to_dicts()]


NDJSON = b"".join(json.dumps({"id": str(i), "name": f"n{i}"}).encode() + b"\n" for i in range(500))


@pytest.mark.parametrize("chunk", [1, 3, 100, 1 << 20])
def test_zstd_ndjson_and_csv_read_like_the_plain_file(chunk: int) -> None:
    assert read(zstd(NDJSON), "ndjson", chunk=chunk) == read(NDJSON, "ndjson")
    csv = b"\xef\xbb\xbfid,name,x\r\n" + b"".join(b'%d,"a\nb",%d\r\n' % (i, i) for i in range(300))
    assert read(zstd(csv), "csv", chunk=chunk) == read(csv, "csv")
    assert len(read(zstd(csv), "csv", chunk=chunk)) == 300


def test_frames_one_after_another_are_read_whole_empty_ones_included() -> None:
    lines = NDJSON.splitlines(keepends=True)
    data = b"".join(zstd(b"") + zstd(line) for line in lines) + zstd(b"") * 1000
    assert read(data, "ndjson", chunk=50) == read(NDJSON, "ndjson")


def test_many_empty_frames_then_data() -> None:
    """200,000 empty frames (1.8 MB) before one record: read in one pass (each frame is a
    fresh start of the decompressor, nothing copied), a few pieces handed on."""
    data = zstd(b"") * 200_000 + zstd(b'{"id":"1"}\n')
    pieces = list(decoded(iter(chunked(data, 1 << 20)), 1 << 30))
    assert b"".join(pieces) == b'{"id":"1"}\n'
    assert len(pieces) == 1


def test_the_cap_counts_decompressed_bytes() -> None:
    with pytest.raises(DecompressedTooLarge, match="zstd file expands to more than 1000 bytes"):
        read(zstd(NDJSON), "ndjson", cap=1000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (zstd(NDJSON)[:-9], "zstd stream is truncated"),
        (zstd(NDJSON)[:20], "zstd stream is truncated"),
        (b"\x28\xb5\x2f\xfd" + b"garbage" * 20, "looks like zstd but cannot be decompressed"),
        (zstd(NDJSON) + b"trailing junk", "looks like zstd but cannot be decompressed"),
    ],
    ids=["truncated-end", "truncated-early", "corrupt", "junk-after-frames"],
)
def test_truncated_or_corrupt_zstd_is_a_file_error(data: bytes, message: str) -> None:
    with pytest.raises(FileError, match=message):
        read(data, "ndjson", chunk=64)


def test_a_frame_asking_for_a_huge_window_is_refused_with_the_reason() -> None:
    """Frame header: single-segment flag off, window descriptor 0xF8 = 2^(10+31) bytes."""
    header = b"\x28\xb5\x2f\xfd" + b"\x00" + b"\xf8"
    with pytest.raises(FileError, match="window larger than 128 MiB"):
        read(header + b"\x01\x00\x00", "ndjson")


class _Stop(Exception):
    pass


def test_tick_is_called_while_a_bomb_expands_and_can_stop_it() -> None:
    """The tick is called every few MiB of output even when the input is one small chunk; an
    exception it raises comes out as itself (not as a zstd error)."""
    bomb = zstd(b"\n" * (64 << 20))  # a few KB in
    calls = [0]

    def tick() -> None:
        calls[0] += 1
        if calls[0] == 5:
            raise _Stop

    with pytest.raises(_Stop):
        for _ in decoded(iter([bomb]), 1 << 40, tick):
            pass


def test_an_error_of_the_storage_passes_through_unchanged() -> None:
    def chunks():
        yield zstd(NDJSON)[:30]
        raise ConnectionResetError("storage went away")

    with pytest.raises(ConnectionResetError, match="storage went away"):
        list(decoded(chunks(), 1 << 30))


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_parquet_is_refused(compress: str) -> None:
    import gzip

    data = b"PAR1" + b"\x00" * 100 + b"PAR1"
    packed = gzip.compress(data) if compress == "gzip" else zstd(data)
    with pytest.raises(FileError, match=f"{compress}-compressed Parquet file"):
        list(decoded(iter([packed]), 1 << 30))


@pytest.mark.parametrize(
    ("name", "declared", "head", "expected"),
    [
        ("users.csv.zst", None, b"", "csv"),
        ("a.NDJSON.ZSTD", None, b"", "ndjson"),
        ("a.parquet", None, b"", "parquet"),
        ("upload", None, b"PAR1\x15\x04", "parquet"),
        ("upload.csv", None, b"PAR1", "csv"),
        (None, "PARQUET", b"", "parquet"),
    ],
)
def test_detect_format_zst_and_parquet(
    name: str | None, declared: str | None, head: bytes, expected: str
) -> None:
    assert detect_format(name, declared, head) == expected


def test_a_zstd_bomb_stops_at_the_cap_with_bounded_memory() -> None:
    """8 GiB of newlines in ~300 KB of frames, cap 3 GiB: the decoder streams 3 GiB through in
    4 MiB steps and stops; its process's peak RSS stays far below what it expanded to."""
    code = textwrap.dedent(
        """
        import pyarrow as pa
        def peak_mib():  # this process's own peak: ru_maxrss would include the parent's
            with open("/proc/self/status") as status:
                return next(int(l.split()[1]) for l in status if l.startswith("VmHWM")) // 1024
        from engine.errors import DecompressedTooLarge
        from engine.formats.decode import decoded
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as out:  # one 256 MiB frame, built small
            for _ in range(256):
                out.write(b"\\n" * (1 << 20))
        frame = sink.getvalue().to_pybytes()
        base = peak_mib()
        total = 0
        try:
            for piece in decoded(iter([frame] * 32), 3 << 30):
                total += len(piece)
        except DecompressedTooLarge:
            pass
        else:
            raise SystemExit("no cap")
        print(total, peak_mib() - base)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    total, grown_mib = map(int, done.stdout.split())
    assert total == 3 << 30
    assert grown_mib < 64, done.stdout
