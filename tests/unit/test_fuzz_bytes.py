"""Bounded hypothesis fuzzing of ``read_batches`` with any bytes — no servers: mutated sample
files (read plain and gzip-compressed, which must agree) and random bytes give rows, error rows
or one ``FileError``, nothing else; every record is numbered once, rows and lines increase, and
no NUL reaches an error row's echoed value. (The native checks are fuzzed in test_native.py.)
"""

from __future__ import annotations

import gzip

from hypothesis import example, given, note
from hypothesis import strategies as st

from engine.errors import FileError
from engine.formats.reader import Batch
from tests.support.readers import (
    COLS,
    FUZZ,
    HOSTILE_BYTES,
    SAMPLES,
    check_numbering,
    mutate,
    outcome,
    read,
)


def _any_read(
    data: bytes, fmt: str, batch_rows: int, chunk: int, cap: int, plain: bytes | None = None
) -> list[Batch] | None:
    """Read ``data`` (``plain``: its uncompressed bytes); None when it fails as a whole."""
    try:
        batches = read(data, fmt, batch_rows=batch_rows, chunk=chunk, record_cap=cap)
    except FileError as exc:
        assert str(exc) and "\x00" not in str(exc)
        return None
    check_numbering(batches, data if plain is None else plain)
    for b in batches:
        record = [] if fmt == "csv" else ["__record"]
        assert b.frame.columns == [*COLS, *record, "__row", "__line"]
        assert all(b.errors["code"] == "malformed_record")
        assert not b.errors["value"].str.contains("\x00", literal=True).any()
    return batches


@FUZZ
@given(
    fmt=st.sampled_from(["csv", "ndjson", "json"]),
    edits=st.lists(
        st.tuples(
            st.integers(0, 300), st.integers(0, 3), st.one_of(HOSTILE_BYTES, st.binary(max_size=4))
        ),
        max_size=6,
    ),
    batch_rows=st.integers(1, 5),
    chunk=st.integers(1, 64),
    cap=st.sampled_from([16, 4096]),
)
@example(fmt="csv", edits=[(12, 0, b'"')], batch_rows=2, chunk=3, cap=4096)
@example(fmt="json", edits=[(0, 400, b"[]")], batch_rows=1, chunk=1, cap=4096)
@example(fmt="ndjson", edits=[(0, 400, b"\n \n")], batch_rows=1, chunk=1, cap=4096)
def test_mutated_files_give_rows_error_rows_or_a_file_error(
    fmt: str, edits: list[tuple[int, int, bytes]], batch_rows: int, chunk: int, cap: int
) -> None:
    data = mutate(SAMPLES[fmt], edits)
    note(f"data={data!r}")
    batches = _any_read(data, fmt, batch_rows, chunk, cap)
    zipped = _any_read(gzip.compress(data), fmt, batch_rows, chunk, cap, plain=data)
    assert (batches is None) == (zipped is None)
    if batches is not None and zipped is not None:
        assert outcome(zipped) == outcome(batches)


@FUZZ
@given(
    fmt=st.sampled_from(["csv", "ndjson", "json"]),
    data=st.binary(max_size=300) | st.lists(HOSTILE_BYTES | st.binary(max_size=3)).map(b"".join),
    batch_rows=st.integers(1, 4),
)
def test_random_bytes_never_crash_a_reader(fmt: str, data: bytes, batch_rows: int) -> None:
    if fmt == "csv":
        data = b"id,name,x\n" + data
    elif fmt == "json":
        data = b"[" + data
    _any_read(data, fmt, batch_rows, 5, 4096)
