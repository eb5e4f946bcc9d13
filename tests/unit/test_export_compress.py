"""Export compression (issue #12): zstd beside gzip, one frame, streamed chunk by chunk."""

from __future__ import annotations

import gzip
import random
import uuid

import polars as pl
import pyarrow as pa
import pytest

from engine.exports.compress import COMPRESSIONS, compressor
from engine.exports.query import Encoded, ExportRequestError, prepare
from engine.exports.writers import writer_for
from engine.resources import catalog

CAT = catalog()


def unzstd(data: bytes) -> bytes:
    with pa.CompressedInputStream(pa.BufferReader(data), "zstd") as stream:
        return stream.read()


def frames(n: int = 40) -> list[pl.DataFrame]:
    """Batches of random uuids: ~2:1 compressible, so the output comes in many pieces."""
    rng = random.Random(12)
    return [
        pl.DataFrame({"id": [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5000)]})
        for _ in range(n)
    ]


@pytest.mark.parametrize(("name", "unpack"), [("gzip", gzip.decompress), ("zstd", unzstd)])
def test_compressed_output_is_the_plain_output_and_counts_its_bytes(name, unpack) -> None:
    plain = b"".join(Encoded(frames(), writer_for("ndjson", [])))
    packed = Encoded(frames(), writer_for("ndjson", []), compression=name)
    chunks = list(packed)
    data = b"".join(chunks)
    assert unpack(data) == plain
    assert packed.rows == 200_000 and packed.bytes == len(data)
    assert len(chunks) > 2  # streamed as it goes, not held until the end


def test_zstd_is_one_frame_even_when_written_in_many_chunks() -> None:
    packer = compressor("zstd")
    data = b"".join(packer.compress(b"%d\n" % i * 100) for i in range(2000)) + packer.flush()
    assert data.count(b"\x28\xb5\x2f\xfd") == 1
    assert unzstd(data) == b"".join(b"%d\n" % i * 100 for i in range(2000))


def test_an_empty_export_is_still_a_valid_compressed_file() -> None:
    empty = [frames(1)[0].clear()]
    assert unzstd(b"".join(Encoded(empty, writer_for("json", []), compression="zstd"))) == b"[]\n"


def test_compression_names_and_file_names() -> None:
    assert COMPRESSIONS == ("gzip", "zstd")
    spec, _ = prepare(CAT, "users", "csv", compression="ZSTD")
    assert (spec.compression, spec.file_name) == ("zstd", "users.csv.zst")
    with pytest.raises(ExportRequestError, match="compression must be one of gzip, zstd"):
        prepare(CAT, "users", "csv", compression="br")
