"""Local-store appends of upload sessions (engine/uploads/local.py) and part sizes, without
servers: offsets, the lock, the size cap, and the SHA-256 carried across requests or recomputed
from the bytes on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine.multipart import MAX_PARTS, MIN_PART_BYTES
from engine.uploads import UploadConflict, UploadTooLarge, local, part_size_for

MIB = 1024 * 1024
DATA = bytes(range(256)) * 4000  # 1,024,000 bytes


def append(
    path: Path, offset: int, *pieces: bytes, upload_id: str = "u1"
) -> tuple[int, str | None]:
    appender = local.Appender(path, upload_id, len(DATA), offset)
    try:
        for piece in pieces:
            appender.write(piece)
    finally:
        done = appender.close()
    return done


@pytest.fixture(autouse=True)
def no_kept_hashes() -> None:
    local._HASHES.clear()


@pytest.mark.parametrize("forget", [False, True], ids=["hash kept", "hash recomputed"])
def test_appends_in_pieces_give_the_file_and_its_sha256(tmp_path: Path, forget: bool) -> None:
    path = tmp_path / "uploads" / "u1" / "data"
    assert append(path, 0, DATA[:1000], DATA[1000:300_000]) == (300_000, None)
    if forget:  # the next request lands on another API process
        local._HASHES.clear()
    offset, digest = append(path, 300_000, DATA[300_000:])
    assert (offset, digest) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert path.read_bytes() == DATA
    assert local.finish(path, "u1", len(DATA), None) == hashlib.sha256(DATA).hexdigest()


def test_a_wrong_offset_is_a_conflict_naming_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "data"
    append(path, 0, DATA[:10])
    for wrong in (0, 9, 11):
        with pytest.raises(UploadConflict) as caught:
            append(path, wrong, DATA[wrong:20])
        assert caught.value.offset == 10
    assert path.read_bytes() == DATA[:10]


def test_one_request_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "data"
    first = local.Appender(path, "u1", len(DATA), 0)
    try:
        with pytest.raises(UploadConflict, match="another request"):
            local.Appender(path, "u1", len(DATA), 0)
        with pytest.raises(UploadConflict, match="another request"):
            local.finish(path, "u1", len(DATA), None)
    finally:
        first.close()
    assert append(path, 0, b"abc") == (3, None)  # the lock went with the first request


def test_bytes_past_the_declared_size_are_refused_and_what_fits_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "data"
    append(path, 0, DATA[:-5])
    with pytest.raises(UploadTooLarge, match="declared size of 1024000"):
        append(path, len(DATA) - 5, DATA[-5:] + b"extra")
    assert path.read_bytes() == DATA


def test_finishing_short_of_the_size_names_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "data"
    append(path, 0, DATA[:77])
    with pytest.raises(UploadConflict, match="holds 77 of its 1024000 bytes") as caught:
        local.finish(path, "u1", len(DATA), None)
    assert caught.value.offset == 77


@pytest.mark.parametrize(
    ("size", "configured", "expected"),
    [
        (1, 8 * MIB, 8 * MIB),
        (80 * MIB, 8 * MIB, 8 * MIB),
        (MAX_PARTS * 8 * MIB, 8 * MIB, 8 * MIB),  # exactly 10,000 parts
        (MAX_PARTS * 8 * MIB + 1, 8 * MIB, 9 * MIB),  # one byte more: bigger parts
        (5 * 1024**4, MIN_PART_BYTES, 525 * MIB),  # 5 TiB, S3's largest object
    ],
)
def test_part_sizes_keep_within_s3s_limits(size: int, configured: int, expected: int) -> None:
    part = part_size_for(size, configured)
    assert part == expected
    assert -(-size // part) <= MAX_PARTS and part >= MIN_PART_BYTES
