"""Parquet imports (issue #12): columns turned into the text validation reads, by Arrow type;
unusable schemas refused naming the columns; rows numbered across row groups; batches bounded by
rows and bytes, cut the same on resume; broken, compressed and oversized files refused. No
servers."""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import DecompressedTooLarge, FileError, MissingColumns, RecordTooLarge
from engine.formats.mapping import PRESENT, FieldMap
from engine.formats.parse import LINE, ROW
from engine.formats.reader import Header, Position, read_batches
from engine.imports.validate import validate
from engine.resources import catalog

USERS = catalog()["users"]


def parquet(table: pa.Table, **kw: Any) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, **kw)
    return out.getvalue()


def read(
    data: bytes,
    columns: list[str],
    required: tuple[str, ...] = (),
    *,
    fmt: str = "parquet",
    batch_rows: int = 1000,
    batch_bytes: int = 1 << 40,
    max_record_bytes: int = 1 << 20,
    cap: int = 1 << 40,
    start: Position | None = None,
    headers: list[Header] | None = None,
) -> list[Any]:
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    return list(
        read_batches(
            chunks,
            fmt,
            columns,
            list(required),
            batch_rows=batch_rows,
            batch_bytes=batch_bytes,
            max_record_bytes=max_record_bytes,
            max_decompressed_bytes=cap,
            start=start,
            header_out=headers,
        )
    )


def rows(batches: list[Any]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b.frame.to_dicts()]


UUID = "3f2b8c1e-7d4a-4e2b-9c1d-2a3b4c5d6e7f"
TS = datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (pa.array(["a", None, "ü ✓"]), ["a", None, "ü ✓"]),
        (pa.array(["x", "y", "x"]).dictionary_encode(), ["x", "y", "x"]),
        (pa.array(["a", None, "b"], pa.large_string()), ["a", None, "b"]),
        (pa.array([True, None, False]), ["true", None, "false"]),
        (
            pa.array([TS, None, datetime(2024, 1, 1, tzinfo=UTC)], pa.timestamp("us", "UTC")),
            ["2024-03-01T12:30:05.123456Z", None, "2024-01-01T00:00:00Z"],
        ),
        (  # naive: taken as UTC, like naive text; nanoseconds cut to microseconds
            pa.array([datetime(2024, 3, 1, 12, 30, 5, 123456)] * 3, pa.timestamp("ns")),
            ["2024-03-01T12:30:05.123456Z"] * 3,
        ),
        (
            pa.array([TS] * 3, pa.timestamp("ms", "Europe/Paris")),
            ["2024-03-01T12:30:05.123Z"] * 3,
        ),
        (pa.array([date(2024, 2, 29), None, date(1999, 1, 1)]), ["2024-02-29", None, "1999-01-01"]),
        (
            pa.array([["a", 'q"'], [], None], pa.list_(pa.string())),
            ['["a","q\\""]', "[]", None],
        ),
        (
            pa.array([["a", None], ["b"], ["c"]], pa.large_list(pa.large_string())),
            ['["a",null]', '["b"]', '["c"]'],
        ),
        (pa.array([bytes.fromhex(UUID.replace("-", ""))] * 3, pa.binary(16)), [UUID] * 3),
        (
            pa.ExtensionArray.from_storage(
                pa.uuid(), pa.array([bytes.fromhex(UUID.replace("-", ""))] * 3, pa.binary(16))
            ),
            [UUID] * 3,
        ),
        (pa.nulls(3), [None, None, None]),
    ],
    ids=lambda v: str(v.type) if isinstance(v, pa.Array) else None,
)
def test_each_arrow_type_becomes_the_text_csv_would_hold(array: pa.Array, expected: list) -> None:
    data = parquet(pa.table({"v": array}))
    assert [r["v"] for r in rows(read(data, ["v"]))] == expected


@pytest.mark.parametrize(
    "array",
    [
        pa.array([1, 2, 3]),
        pa.array([1.5, 2.0, 3.0]),
        pa.array([b"ab", b"c", b"d"]),
        pa.array([[1], [2], []]),
        pa.array([{"a": "x"}, {"a": "y"}, {"a": "z"}]),
        pa.array([b"0123456789abcde"] * 3, pa.binary(15)),
    ],
    ids=lambda a: str(a.type),
)
def test_a_column_of_a_type_no_field_takes_fails_the_file_naming_it(array: pa.Array) -> None:
    data = parquet(pa.table({"id": ["1", "2", "3"], "email": array, "other": array}))
    kind = re.escape(str(array.type).split("<")[0])
    with pytest.raises(FileError, match=rf"type no field takes: email is {kind}"):
        read(data, ["id", "email"])


def test_missing_required_columns_fail_naming_them_and_unknown_ones_are_warned() -> None:
    data = parquet(pa.table({"id": ["1"], "nickname": ["x"], "_errors": ["email: required"]}))
    with pytest.raises(MissingColumns, match=r"lacks required column\(s\): email, name; found: id"):
        read(data, ["id", "email", "name"], ("email", "name"))
    headers: list[Header] = []
    read(data, ["id", "email"], headers=headers)
    # _errors (a rejected file's) is ignored without a word
    assert headers[0].warnings == ["ignored unknown column(s): nickname"]


def test_repeated_columns_fail() -> None:
    table = pa.Table.from_arrays([pa.array(["1"]), pa.array(["2"])], names=["id", "id"])
    with pytest.raises(MissingColumns, match=r"repeats column\(s\): id"):
        read(parquet(table), ["id"])


def test_rows_are_numbered_across_row_groups_and_line_is_null() -> None:
    n = 2500
    data = parquet(pa.table({"id": [str(i) for i in range(n)]}), row_group_size=700)
    batches = read(data, ["id", "email"], batch_rows=1000)
    assert [b.rows for b in batches] == [1000, 1000, 500]
    frame = pl.concat([b.frame for b in batches])
    assert frame[ROW].to_list() == list(range(1, n + 1))
    assert frame[LINE].null_count() == n and frame["email"].null_count() == n
    assert frame["id"].to_list() == [str(i) for i in range(n)]
    assert [b.after for b in batches] == [
        Position(1, 1000, 1001, 0),
        Position(2, 2000, 2001, 0),
        Position(3, 2500, 2501, 0),
    ]
    assert batches[-1].bytes_end == len(data)


def test_validation_reads_the_frames_like_csv_rows() -> None:
    table = pa.table(
        {
            "id": [UUID, None, "nope"],
            "email": ["a@example.com", "bad", "c@example.com"],
            "name": ["A", "B", None],
            "role": pa.array(["admin", "reader", "editor"]).dictionary_encode(),
            "active": [True, None, False],
            "created_at": pa.array([TS, TS, TS], pa.timestamp("us", "UTC")),
        }
    )
    (batch,) = read(parquet(table), list(USERS.column_names), USERS.required_columns)
    checked = validate(batch.frame, USERS)
    assert checked.valid["email"].to_list() == ["a@example.com"]
    assert checked.valid["active"].to_list() == [True]
    assert checked.valid["created_at"].to_list() == [TS]
    errors = checked.errors.select("row", "line", "field", "code").rows()
    assert errors == [
        (2, None, "email", "invalid_format"),
        (3, None, "id", "invalid_format"),
        (3, None, "name", "required"),
    ]


def test_a_row_whose_text_passes_the_record_limit_fails_the_file() -> None:
    data = parquet(pa.table({"id": ["a", "b" * 5000, "c"]}))
    with pytest.raises(RecordTooLarge, match="row 2 of the Parquet file holds 5000 bytes"):
        read(data, ["id"], max_record_bytes=4096)


@settings(max_examples=30, deadline=None)
@given(
    batch_rows=st.integers(1, 60),
    batch_bytes=st.integers(1, 400),
    group=st.integers(1, 50),
)
def test_byte_bounded_batches_are_deterministic_and_resumable(
    batch_rows: int, batch_bytes: int, group: int
) -> None:
    ids = [("x" * (i % 13)) + str(i) for i in range(120)]
    data = parquet(pa.table({"id": ids}), row_group_size=group)
    batches = read(data, ["id"], batch_rows=batch_rows, batch_bytes=batch_bytes)
    assert [r["id"] for r in rows(batches)] == ids
    for b in batches:
        size = sum(len(v) for v in b.frame["id"].to_list())
        assert b.rows <= batch_rows and (size <= batch_bytes or b.rows == 1)
    for i in sorted({0, len(batches) // 3, len(batches) // 2, len(batches) - 2}):
        if not 0 <= i < len(batches) - 1:
            continue
        b = batches[i]
        resumed = read(data, ["id"], batch_rows=batch_rows, batch_bytes=batch_bytes, start=b.after)
        assert [(r.index, r.rows, r.after) for r in resumed] == [
            (r.index, r.rows, r.after) for r in batches[i + 1 :]
        ]
        assert rows(resumed) == rows(batches[i + 1 :])


def test_the_par1_magic_wins_over_a_declared_text_format() -> None:
    data = parquet(pa.table({"id": ["1", "2"]}))
    assert [r["id"] for r in rows(read(data, ["id"], fmt="csv"))] == ["1", "2"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"id\n1\n", "not Parquet: it does not start with PAR1"),
        (gzip.compress(parquet(pa.table({"id": ["1"]}))), "gzip-compressed Parquet file"),
        (parquet(pa.table({"id": ["1"] * 100}))[:-30], "incomplete: it does not end with PAR1"),
        (b"PAR1" + b"\x00" * 50 + b"PAR1", "footer cannot be read"),
        (parquet(pa.table({"id": pa.array([], pa.string())})), "holds no records"),
    ],
    ids=["csv", "gzipped", "truncated", "bad-footer", "empty"],
)
def test_broken_or_wrapped_files_fail_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(FileError, match=message):
        read(data, ["id"])


def test_the_decompressed_cap_counts_the_file_and_what_its_columns_declare() -> None:
    data = parquet(pa.table({"id": [f"{'a' * 100}{i}" for i in range(1000)]}), compression="zstd")
    assert len(data) < 5000  # its column declares ~108 KB
    with pytest.raises(DecompressedTooLarge, match="Parquet file is larger than 1000 bytes"):
        read(data, ["id"], cap=1000)
    with pytest.raises(DecompressedTooLarge, match="columns expand to"):
        read(data, ["id"], cap=50_000)
    assert len(rows(read(data, ["id"], cap=200_000))) == 1000


_PEAK = textwrap.dedent(
    """
    import sys
    from engine.formats.reader import read_batches

    def chunks():
        with open(sys.argv[1], "rb") as f:
            while chunk := f.read(4 << 20):
                yield chunk

    seen = 0
    for batch in read_batches(chunks(), "parquet", ["id", "body"], [], batch_rows=50_000,
                              batch_bytes=8 << 20, max_record_bytes=1 << 20,
                              max_decompressed_bytes=1 << 40):
        seen += batch.rows
    with open("/proc/self/status") as status:  # this process's own peak (VmHWM)
        print(seen, next(int(l.split()[1]) for l in status if l.startswith("VmHWM")) // 1024)
    """
)


def _one_row_group(path: Path, n: int) -> None:
    ids = pc.cast(pa.array(range(n)), pa.string())
    body = pc.binary_join_element_wise(ids, pa.scalar("lorem ipsum dolor " * 23), " ")
    pq.write_table(pa.table({"id": ids, "body": body}), path, row_group_size=n)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1


def test_a_row_group_larger_than_the_memory_bound_streams(tmp_path: Path) -> None:
    """One row group of 300,000 rows of ~420 bytes (~126 MB of text) against one of 30,000, each
    read in 8 MiB batches by a fresh process: the peaks differ by a fraction of the text."""
    peaks = {}
    for n in (30_000, 300_000):
        _one_row_group(tmp_path / f"{n}.parquet", n)
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, str(tmp_path / f"{n}.parquet")],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        seen, peaks[n] = map(int, done.stdout.split())
        assert seen == n
    assert peaks[300_000] - peaks[30_000] < 40, peaks


def test_columns_are_read_through_a_mapping_and_merge_gets_the_presence_bits() -> None:
    fields = FieldMap.of(
        USERS.column_names,
        {"mapping": {"Email Address": "email"}, "header_case": "insensitive"},
        presence=True,
    )
    table = pa.table({"ID": [UUID], "Email Address": ["a@example.com"], "Note": ["x"]})
    headers: list[Header] = []
    (batch,) = list(
        read_batches(
            [parquet(table)],
            "parquet",
            USERS.column_names,
            [],
            batch_rows=10,
            max_record_bytes=1 << 20,
            max_decompressed_bytes=1 << 30,
            header_out=headers,
            fields=fields,
            match_keys=USERS.keys,
        )
    )
    row = batch.frame.to_dicts()[0]
    assert (row["id"], row["email"], row["name"]) == (UUID, "a@example.com", None)
    assert row[PRESENT] == fields.bits(["id", "email"]) == headers[0].present
    assert headers[0].shown == {"id": "ID", "email": "Email Address"}
    assert headers[0].warnings == ["ignored unknown column(s): Note"]
    with pytest.raises(MissingColumns, match="mode=merge matches records by id or email"):
        list(
            read_batches(
                [parquet(pa.table({"name": ["x"]}))],
                "parquet",
                USERS.column_names,
                [],
                batch_rows=10,
                max_record_bytes=1 << 20,
                max_decompressed_bytes=1 << 30,
                fields=fields,
                match_keys=USERS.keys,
            )
        )
