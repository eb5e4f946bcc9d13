"""Runs of whitespace that hold no record (issue #8): capped like a record wherever they could
pile up, free where they end a file, and never costing more than linear work.

Before: the whitespace ahead of a JSON array's ``[`` was buffered without limit (1 MB of gzip
held a worker at 2.7 GiB), and a chunk of blank lines was re-concatenated at every batch cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from engine.errors import FileError, RecordTooLarge
from engine.formats import framing
from engine.formats.reader import Batch, read_batches

COLS = ["id", "name"]
CAP = 64 * 1024


def _read(chunks: Any, fmt: str, *, batch_rows: int = 1000, cap: int = CAP) -> list[Batch]:
    return list(
        read_batches(
            chunks,
            fmt,
            COLS,
            ["id"] if fmt == "csv" else [],
            batch_rows=batch_rows,
            max_record_bytes=cap,
            max_decompressed_bytes=1 << 40,
        )
    )


def _split(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _rows(batches: list[Batch]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b.frame.select("id", "__row", "__line").to_dicts()]


def test_whitespace_before_a_json_array_is_capped_and_not_read_past_the_cap() -> None:
    pulled = [0]

    def endless_blank() -> Iterator[bytes]:
        for _ in range(400):  # 1.6 MB, 25x the cap
            pulled[0] += 1
            yield b" \n\t\r" * 1024
        yield b'[{"id": "1"}]'

    with pytest.raises(RecordTooLarge, match=r"more than 65536 bytes of whitespace.*'\['"
                       r".*BULKIO_MAX_RECORD_BYTES"):  # fmt: skip
        _read(endless_blank(), "json")
    assert pulled[0] <= CAP // 4096 + 2, pulled


def test_whitespace_before_a_json_array_within_the_cap_keeps_line_numbers() -> None:
    data = b"\n" * 10 + b" " * (CAP - 20) + b'[{"id": "1"},\n{"id": "2"}]'
    for size in (1000, len(data)):
        assert _rows(_read(_split(data, size), "json")) == [
            {"id": "1", "__row": 1, "__line": 11},
            {"id": "2", "__row": 2, "__line": 12},
        ]


def test_whitespace_after_a_json_array_is_not_kept() -> None:
    data = b'[{"id": "1"}]' + b" \n" * (4 * CAP)
    assert _rows(_read(_split(data), "json")) == [{"id": "1", "__row": 1, "__line": 1}]


def test_json_text_after_the_array_is_still_refused() -> None:
    data = b'[{"id": "1"}]' + b" \n" * CAP + b"x"
    with pytest.raises(FileError, match="after the end of the JSON array"):
        _read(_split(data), "json")


@pytest.mark.parametrize(
    ("fmt", "data", "line"),
    [
        ("ndjson", b'{"id": "1"}\n' + b" \t" * CAP + b'{"id": "2"}\n', 2),
        ("json", b'[{"id": "1"},' + b" \n" * CAP + b'{"id": "2"}]', 1),
        ("csv", b"id,name\n1,a\n" + b" " * (CAP + 1) + b"\n2,b\n", 3),
    ],
)
def test_a_run_of_whitespace_longer_than_the_cap_fails_saying_so(
    fmt: str, data: bytes, line: int
) -> None:
    with pytest.raises(RecordTooLarge, match=r"more than 65536 bytes of nothing but whitespace "
                       rf"from line {line} on \(BULKIO_MAX_RECORD_BYTES\)"):  # fmt: skip
        _read(_split(data), fmt)


class _CountingNumpy:
    """numpy for ``engine.formats.framing``, counting the elements its concatenations produce."""

    def __init__(self) -> None:
        self.elements = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def concatenate(self, arrays: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        out = np.concatenate(arrays, *args, **kwargs)
        self.elements += out.size
        return out

    def append(self, arr: Any, values: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        out = np.append(arr, values, *args, **kwargs)
        self.elements += out.size
        return out


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_chunk_of_blank_lines_is_cut_with_linear_work(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200,000 blank lines in one chunk, cut into 200 batches of 1,000 records: the record ends
    are gathered once, not again at every cut (40 million elements copied before)."""
    counting = _CountingNumpy()
    monkeypatch.setattr(framing, "np", counting)
    lines = 200_000
    head = b"id,name\n" if fmt == "csv" else b""
    last = b"1,a\n" if fmt == "csv" else b'{"id": "1"}\n'
    batches = _read([head + b"\n" * lines + last], fmt)
    assert len(batches) == lines // 1000 + 1
    assert _rows(batches) == [{"id": "1", "__row": 1, "__line": lines + 1 + len(head) // 8}]
    assert counting.elements <= 3 * lines, counting.elements
