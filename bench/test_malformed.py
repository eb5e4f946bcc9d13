"""Malformed NDJSON against clean NDJSON (issue #8): the same 200,000 comments read and validated
in-process (``read_batches`` + ``validate``, the work of a worker's reading thread, without the
database), once as generated and once with every line made malformed (a trailing comma inside
the object: still ``{`` … ``}``, so only a JSON parser can tell). Malformed records used to be
isolated by bisection, two parser calls each: such a file ran ~30x slower than a clean one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from inputs import data_file
from report import Recorder
from timing import timed

from engine.formats.reader import read_batches
from engine.imports.validate import validate
from engine.resources import catalog
from engine.settings import DEFAULT_ROLES, Settings

ROWS = 200_000
ROUNDS = 3
#: Pieces handed to the reader, as the object store's reads (engine.storage.READ_CHUNK).
CHUNK = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """The first ROWS comments of the 1M file, and the same lines each made malformed."""
    path = data_file("comments", "ndjson", 1_000_000).path
    lines = []
    with open(path, "rb") as f:
        for _ in range(ROWS):
            lines.append(f.readline())
    clean = b"".join(lines)
    malformed = clean.replace(b"}\n", b",}\n")
    assert malformed.count(b",}\n") == ROWS
    return {"clean": clean, "malformed": malformed}


def _read_and_validate(data: bytes) -> tuple[int, int]:
    """(valid rows, malformed records) through the reader and validation, default settings."""
    s = Settings()
    resource = catalog(DEFAULT_ROLES)["comments"]
    chunks: Iterator[bytes] = (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    valid = malformed = 0
    for batch in read_batches(
        chunks,
        "ndjson",
        resource.column_names,
        resource.required_columns,
        batch_rows=s.batch_rows,
        batch_bytes=s.batch_bytes,
        max_record_bytes=s.max_record_bytes,
        max_decompressed_bytes=s.max_decompressed_bytes,
    ):
        valid += validate(batch.frame, resource).valid.height
        malformed += batch.errors.height
    return valid, malformed


@pytest.mark.parametrize("kind", ["clean", "malformed"])
def test_read_and_validate(benchmark: object, recorder: Recorder, files: dict[str, bytes],
                           kind: str) -> None:  # fmt: skip
    data = files[kind]
    (valid, malformed), seconds, cpu = timed(
        benchmark, lambda: _read_and_validate(data), rounds=ROUNDS, warmup_rounds=1
    )
    expected = (ROWS, 0) if kind == "clean" else (0, ROWS)
    assert (valid, malformed) == expected, (kind, valid, malformed)
    recorder.record(f"reader.ndjson.{kind}", seconds, rows=ROWS, rounds=ROUNDS, **cpu.extra())
