"""Rejected files (engine/reports.py) without servers: error rows grouped per record
across batches, records copied byte for byte, the file read only as far as the last failed
record, and row numbers that do not match the file refused."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import polars as pl
import pytest

from engine.errors import FileError
from engine.formats.mapping import FieldMap
from engine.formats.reader import Header, read_batches
from engine.reports import by_row, rejected_file

SCHEMA = {"row": pl.Int64, "field": pl.String, "code": pl.String, "message": pl.String}


def errors(*rows: tuple[int, str | None, str, str]) -> pl.DataFrame:
    return pl.DataFrame([list(r) for r in rows], schema=SCHEMA, orient="row")


def out(data: bytes | Iterable[bytes], fmt: str, *batches: pl.DataFrame) -> bytes:
    chunks = [data] if isinstance(data, bytes) else data
    return b"".join(
        rejected_file(
            chunks, fmt, batches, max_decompressed_bytes=1 << 30, max_record_bytes=1 << 20
        )
    )


def test_a_records_error_rows_are_kept_together_across_batches() -> None:
    grouped = list(
        by_row(
            [
                errors((1, "a", "x", "m1"), (2, "a", "x", "m2")),
                errors((2, "b", "y", "m3")),
                errors(),
                errors((2, "c", "z", "m4"), (7, None, "malformed_record", "m5")),
            ]
        )
    )
    frame = pl.concat(grouped)
    assert frame["row"].to_list() == [1, 2, 7]
    assert frame["text"].to_list() == [
        "a: x: m1",
        "a: x: m2; b: y: m3; c: z: m4",
        "malformed_record: m5",
    ]
    assert json.loads(frame["json"][2]) == [
        {"field": None, "code": "malformed_record", "message": "m5"}
    ]


def test_csv_keeps_the_header_line_ending_blank_lines_and_quotes() -> None:
    data = b'\xef\xbb\xbfa,b\r\n1,"x\r\ny"\r\n\r\n2,"q""q"\r\n3,z'
    got = out(data, "csv", errors((2, "b", "bad", 'say "no"'), (3, "a", "bad", "=1")))
    assert got == b'a,b,_errors\r\n2,"q""q","b: bad: say ""no"""\r\n3,z,"a: bad: =1"\r\n'


def test_ndjson_objects_get_the_member_empty_ones_without_a_comma() -> None:
    data = b'{"a": 1}\r\n  {}  \n{"a": {"b": "}"}}\n"text"\n'
    got = out(data, "ndjson", errors((2, "a", "r", "m"), (3, "a", "x", "m"), (4, None, "mr", "m")))
    lines = got.split(b"\n")
    assert lines[0] == b'  {"_errors":[{"field":"a","code":"r","message":"m"}]}  '
    assert lines[1] == b'{"a": {"b": "}"},"_errors":[{"field":"a","code":"x","message":"m"}]}'
    assert json.loads(lines[2]) == {
        "_errors": [{"field": None, "code": "mr", "message": "m"}],
        "_record": '"text"',
    }


def test_json_arrays_drop_the_separators_and_stay_one_array() -> None:
    data = b'\n [ {"a":1} ,\n\t{"a":2},{"a":3}\n]\n'
    got = out(data, "json", errors((1, "a", "x", "m"), (3, "a", "y", "m")))
    assert json.loads(got) == [
        {"a": 1, "_errors": [{"field": "a", "code": "x", "message": "m"}]},
        {"a": 3, "_errors": [{"field": "a", "code": "y", "message": "m"}]},
    ]
    assert out(data, "json") == b"[]\n"


def test_reading_stops_after_the_last_failed_record() -> None:
    head = b"a\n" + b"".join(b"%d\n" % i for i in range(50_000))

    def chunks() -> Iterator[bytes]:
        yield head
        raise AssertionError("read past the last failed record")

    assert out(chunks(), "csv", errors((3, "a", "x", "m"))) == b'a,_errors\n2,"a: x: m"\n'


def test_error_rows_beyond_the_file_are_refused() -> None:
    with pytest.raises(FileError, match="does not hold the records"):
        out(b"a\n1\n2\n", "csv", errors((2, "a", "x", "m"), (2, "b", "x", "m"), (9, "a", "x", "m")))


@pytest.mark.parametrize("mapped", [False, True], ids=["plain", "mapping"])
@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("csv", b'id,name,_errors,extra\n1,a,"name: x: y",z\n'),
        ("ndjson", b'{"id": "1", "name": "a", "_errors": [{"field": "name"}], "extra": 1}\n'),
        ("json", b'[{"id": "1", "_errors": [], "extra": 1}]'),
    ],
)
def test_a_rejected_files_errors_are_ignored_without_a_warning(
    fmt: str, data: bytes, mapped: bool
) -> None:
    columns = ["id", "name"]
    fields = FieldMap.of(columns, {"header_case": "insensitive"}) if mapped else None
    headers: list[Header] = []
    batches = list(
        read_batches([data], fmt, columns, [], batch_rows=10, max_record_bytes=1 << 20,
                     max_decompressed_bytes=1 << 20, header_out=headers, fields=fields)
    )  # fmt: skip
    assert batches[0].frame["id"].to_list() == ["1"]
    key = "column" if fmt == "csv" else "key"
    assert headers[0].warnings == [f"ignored unknown {key}(s): extra"]
