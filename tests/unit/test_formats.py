"""Readers: framing, line numbers, malformed records, gzip, resume — no servers."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import DecompressedTooLarge, FileError, InvalidEncoding, MissingColumns
from engine.formats import detect_format
from engine.formats.reader import Position, read_batches

COLS = ["id", "name", "x"]


def read(
    data: bytes,
    fmt: str,
    *,
    batch_rows: int = 1000,
    chunk: int = 7,
    required=("id",),
    start: Position | None = None,
    cap: int = 10**9,
):
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    return list(
        read_batches(
            chunks,
            fmt,
            COLS,
            list(required) if fmt == "csv" else [],
            batch_rows=batch_rows,
            max_record_bytes=4096,
            max_decompressed_bytes=cap,
            start=start,
        )
    )


def rows_of(batches) -> list[dict]:
    return [r for b in batches for r in b.frame.to_dicts()]


def errors_of(batches) -> list[tuple]:
    return [(e["row"], e["line"], e["code"]) for b in batches for e in b.errors.to_dicts()]


@pytest.mark.parametrize(
    ("name", "declared", "expected"),
    [
        ("a.csv", None, "csv"),
        ("a.CSV.gz", None, "csv"),
        ("a.ndjson", None, "ndjson"),
        ("a.jsonl.gz", None, "ndjson"),
        ("a.json", None, "json"),
        ("blob", "csv", "csv"),
        ("a.json", "ndjson", "ndjson"),
    ],
)
def test_detect_format(name, declared, expected):
    assert detect_format(name, declared) == expected


def test_detect_format_refuses_unknown():
    with pytest.raises(FileError, match="format=csv"):
        detect_format("data.bin", None)


def test_csv_quoted_newlines_bom_crlf_and_blank_lines_keep_true_line_numbers():
    data = (
        b'\xef\xbb\xbfid,name,x\r\n1,"a\r\nb",q\r\n\r\n2,"say ""hi""",\r\n'
        b'3,,z,extra\r\n4,w,"multi\nline\ntext"\r\n5,e,f'
    )
    batches = read(data, "csv", batch_rows=2)
    assert [(r["__row"], r["__line"], r["id"]) for r in rows_of(batches)] == [
        (1, 2, "1"),
        (2, 5, "2"),
        (4, 7, "4"),
        (5, 10, "5"),
    ]
    assert rows_of(batches)[0]["name"] == "a\r\nb"
    assert rows_of(batches)[1]["name"] == 'say "hi"'
    assert errors_of(batches) == [(3, 6, "malformed_record")]


def test_csv_header_problems_fail_the_file():
    with pytest.raises(MissingColumns, match="lacks required column"):
        read(b"name,x\na,b\n", "csv")
    with pytest.raises(MissingColumns, match="repeats column"):
        read(b"id,id\n1,2\n", "csv")
    with pytest.raises(MissingColumns, match="empty"):
        read(b"", "csv")


def test_csv_unbalanced_quote_is_a_file_error():
    with pytest.raises(FileError, match="quote"):
        read(b'id,name,x\n1,"open,x\n2,b,c\n', "csv")


def test_ndjson_isolates_bad_lines_and_non_objects():
    data = b'{"id":"1"}\n\n{"id":2,"name":["a"]}\n{"id":\n[1]\n"s"\n{"id":"7","x":{"a":1}}\n'
    batches = read(data, "ndjson")
    assert [(r["__row"], r["__line"], r["id"]) for r in rows_of(batches)] == [
        (1, 1, "1"),
        (2, 3, "2"),
        (6, 7, "7"),
    ]
    assert errors_of(batches) == [
        (3, 4, "malformed_record"),
        (4, 5, "malformed_record"),
        (5, 6, "malformed_record"),
    ]
    assert rows_of(batches)[2]["x"] == '{"a": 1}'


def test_json_array_with_escapes_nesting_and_non_objects():
    data = (
        b'  [\n {"id":"1","name":"a,\\"]b\\\\"},\n {"id":"2",\n  "name":"x"}, 7,\n'
        b' {"id":"3","x":[1,{"a":"}"}]}\n]\n'
    )
    batches = read(data, "json", batch_rows=2, chunk=5)
    assert [(r["__row"], r["__line"], r["id"], r["name"]) for r in rows_of(batches)] == [
        (1, 2, "1", 'a,"]b\\'),
        (2, 3, "2", "x"),
        (4, 5, "3", None),
    ]
    assert errors_of(batches) == [(3, 4, "malformed_record")]


@pytest.mark.parametrize("data", [b'{"id": 1}', b"  ", b"[{}"])
def test_json_that_is_not_an_array_fails(data):
    with pytest.raises(FileError):
        read(data, "json")


def test_gzip_is_transparent_and_capped():
    data = b"".join(json.dumps({"id": str(i)}).encode() + b"\n" for i in range(500))
    assert len(rows_of(read(gzip.compress(data), "ndjson", chunk=100))) == 500
    with pytest.raises(DecompressedTooLarge):
        read(gzip.compress(data), "ndjson", cap=1000)


def test_invalid_utf8_names_offset_and_line():
    with pytest.raises(InvalidEncoding, match="line 3"):
        read(b"id,name,x\n1,a,b\n2,\xff,c\n", "csv")


def _csv(n: int) -> bytes:
    lines = ["id,name,x"]
    for i in range(n):
        name = f'"n{i}\nmore"' if i % 7 == 0 else f"n{i}"
        lines.append(f"{i},{name},{'bad,extra' if i % 11 == 0 else 'v'}")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_resume_from_any_checkpoint_gives_the_same_remaining_batches(fmt):
    if fmt == "csv":
        data = _csv(100)
    else:
        data = b"".join(
            (b"{oops\n" if i % 9 == 0 else json.dumps({"id": str(i)}).encode() + b"\n")
            for i in range(100)
        )
    full = read(data, fmt, batch_rows=13)
    for k, batch in enumerate(full[:-1]):
        resumed = read(data, fmt, batch_rows=13, start=batch.after)
        assert [b.index for b in resumed] == [b.index for b in full[k + 1 :]]
        assert rows_of(resumed) == rows_of(full[k + 1 :])
        assert errors_of(resumed) == errors_of(full[k + 1 :])


@settings(max_examples=40, deadline=None)
@given(chunk=st.integers(1, 300), batch_rows=st.integers(1, 40))
def test_batches_do_not_depend_on_chunking(chunk, batch_rows):
    data = _csv(60)
    reference = read(data, "csv", batch_rows=batch_rows, chunk=len(data))
    got = read(data, "csv", batch_rows=batch_rows, chunk=chunk)
    assert [b.after for b in got] == [b.after for b in reference]
    assert rows_of(got) == rows_of(reference)
    assert sum(b.rows for b in got) == 60


def test_frames_are_strings_with_the_record_row_and_line():
    batches = read(b'{"id": 5, "name": true}\n', "ndjson")
    assert batches[0].frame.schema == {
        "id": pl.String,
        "name": pl.String,
        "x": pl.String,
        "__record": pl.String,
        "__row": pl.Int64,
        "__line": pl.Int64,
    }
    assert rows_of(batches) == [
        {"id": "5", "name": "true", "x": None, "__record": '{"id": 5, "name": true}\n'}
        | {"__row": 1, "__line": 1}
    ]


@pytest.mark.parametrize(
    "data", [b"\x1f\x8b\x08\x00garbage", gzip.compress(b'{"id":"1"}\n' * 50)[:-12]]
)
def test_corrupt_or_truncated_gzip_is_a_file_error(data):
    with pytest.raises(FileError, match="gzip"):
        read(data, "ndjson")


def test_concatenated_gzip_members_are_read_whole():
    data = gzip.compress(b'{"id":"1"}\n') + gzip.compress(b'{"id":"2"}\n')
    assert [r["id"] for r in rows_of(read(data, "ndjson", chunk=5))] == ["1", "2"]


@settings(max_examples=30, deadline=None)
@given(chunk=st.integers(1, 500), batch_bytes=st.integers(1, 400))
def test_byte_bounded_batches_are_deterministic_and_resumable(chunk, batch_bytes):
    data = _csv(80)

    def run(start=None, size=chunk):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        return list(
            read_batches(
                chunks,
                "csv",
                COLS,
                ["id"],
                batch_rows=10,
                batch_bytes=batch_bytes,
                max_record_bytes=4096,
                max_decompressed_bytes=10**9,
                start=start,
            )
        )

    reference = run(size=len(data))
    got = run()
    assert [b.after for b in got] == [b.after for b in reference]
    assert sum(b.rows for b in got) == 80
    assert all(b.rows <= 10 for b in got)
    for k, batch in enumerate(reference[:-1]):
        assert [b.after for b in run(start=batch.after)] == [b.after for b in reference[k + 1 :]]


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_nested_values_with_backslashes_come_back_exact(fmt):
    tags = ["a\\b", "\\", "\\\\", 'q"uote', "\\ò", "tab\there"]
    line = json.dumps({"id": "1", "name": tags}).encode()
    data = (b"[\n" + line + b"\n]\n") if fmt == "json" else line + b"\n"
    got = rows_of(read(data, fmt))[0]["name"]
    assert json.loads(got) == tags


# ---------------------------------------------------------------- per-record counting


@given(st.lists(st.booleans(), max_size=80), st.lists(st.integers(0, 80), max_size=10))
def test_count_per_record_counts_each_records_selected_bytes(
    bits: list[bool], cuts: list[int]
) -> None:
    import numpy as np

    from engine.formats.parse import _count_per_record
    from engine.formats.records import Layout

    mask = np.array(bits, dtype=bool)
    bounds = np.array([0, *sorted(min(c, len(bits)) for c in cuts), len(bits)], dtype=np.int64)
    starts, ends = bounds[:-1], bounds[1:]
    none = np.zeros(len(starts), dtype=bool)
    got = _count_per_record(mask, Layout(starts, ends, none, none.astype(np.int64)))
    assert got.tolist() == [int(mask[a:b].sum()) for a, b in zip(starts, ends, strict=True)]


@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b'"')))
def test_parity_at_sparse_quotes_matches_the_running_parity(data: bytes) -> None:
    import numpy as np

    from engine.formats.framing import QUOTE, as_array, parity_at, running_parity

    arr = as_array(data)
    positions = np.flatnonzero(arr != QUOTE)  # where it is asked: commas, newlines
    expected = running_parity(arr == QUOTE)[positions]
    assert parity_at(np.flatnonzero(arr == QUOTE), positions).tolist() == expected.tolist()
