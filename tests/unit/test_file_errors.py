"""Hostile files that fail as a whole (issue #5), through the readers and the validator — no
servers: encodings, empty and header-only files, unclosed quotes and arrays, CR-only line ends,
repeated or missing header names, field and record caps; each raises the one ``FileError`` that
names the problem, with no NUL in its message (it becomes the job's error).
"""

from __future__ import annotations

import pytest

from engine.errors import FileError, InvalidEncoding, MissingColumns, RecordTooLarge
from engine.formats.parse import MAX_FIELDS
from tests.support.readers import read, read_users

H = b"id,email,name,role,created_at\n"
OK = b",a@b.cd,Ann,admin,2024-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("data", "fmt", "error", "message"),
    [
        (b"", "csv", MissingColumns, "the file is empty"),
        (b"\n\n", "csv", MissingColumns, "the file is empty"),
        (H, "csv", FileError, "the CSV file has a header but no records"),
        (H + b"\n  \n", "csv", FileError, "the CSV file has a header but no records"),
        (b"", "ndjson", FileError, "the file holds no records"),
        (b" \n\r\n", "ndjson", FileError, "the file holds no records"),
        (b"[]", "json", FileError, "the JSON array is empty"),
        (b"  [ \n ]\n", "json", FileError, "the JSON array is empty"),
        (b"", "json", FileError, "the file is empty"),
        (b'{"id": 1}', "json", FileError, "must hold one array of objects"),
        (b"[{}", "json", FileError, "the JSON array is not closed"),
        (b"[{}] x", "json", FileError, "unexpected data after the end of the JSON array"),
        (
            H.replace(b"\n", b"\r") + OK + b"\r",
            "csv",
            FileError,
            "the file seems to use CR-only line endings",
        ),
        (b'id,"email\nname\n', "csv", FileError, "the CSV header ends inside a quoted field"),
        (H + b',"open,x,y,z\n', "csv", FileError, "ends inside a quoted field"),
        (
            b"id,email,id,name,role,created_at\n" + OK + b"\n",
            "csv",
            MissingColumns,
            "the CSV header repeats column(s): id",
        ),
        (
            b"id,email,name,role,created_at,\x00,\x00\n",
            "csv",
            MissingColumns,
            "repeats column(s): \u2400",
        ),
        (
            b"id,email\n",
            "csv",
            MissingColumns,
            "lacks required column(s): name, role, created_at; found: id, email",
        ),
        (
            ",".join(f"c{i}" for i in range(MAX_FIELDS + 1)).encode() + b"\n",
            "csv",
            FileError,
            f"the CSV header has {MAX_FIELDS + 1} columns; at most {MAX_FIELDS} are accepted",
        ),
        ("id,email\n".encode("utf-16"), "csv", InvalidEncoding, "UTF-16 (or UTF-32) byte-order"),
        ("[{}]".encode("utf-16-be"), "json", FileError, "must hold one array"),
        (
            H + b",\xe9t\xe9,x,admin,2024\n",
            "csv",
            InvalidEncoding,
            "byte 0xe9 at offset 31 (line 2)",
        ),
        (
            b'{"a":"' + b"x" * 5000 + b'"}\n',
            "ndjson",
            RecordTooLarge,
            "a record starting on line 1 is longer than 4096 bytes",
        ),
        (
            H + OK + b"\n" + b"," * 5000 + b"\n",
            "csv",
            RecordTooLarge,
            "a record starting on line 3 is longer than 4096 bytes",
        ),
        (b"a" * 5000 + b"\n", "csv", MissingColumns, "header line is longer than the record"),
    ],
)
def test_hostile_files_fail_with_a_precise_message(
    data: bytes, fmt: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        read_users(data, fmt, cap=10**5 if b"c1024" in data else 4096)
    assert message in str(info.value)
    assert "\x00" not in str(info.value)  # the message becomes the job's error (PostgreSQL text)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 10**6])
@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b'{"id":"1"}\n{"a":"' + b"x" * 5000 + b'"}\n{"id":"2"}\n', "ndjson"),
        (b'[{"id":"1"},{"a":"' + b"x" * 5000 + b'"},{"id":"2"}]', "json"),
        (b"id,name,x\n1,a,b\n2," + b"x" * 5000 + b",c\n3,d,e\n", "csv"),
        (b"id,name,x" + b"y" * 5000 + b"\n1,a,b\n", "csv"),
    ],
)
def test_the_record_cap_does_not_depend_on_chunk_sizes(data: bytes, fmt: str, chunk: int) -> None:
    """Regression: a long record that arrived whole in one chunk slipped past the cap."""
    with pytest.raises(FileError, match="longer than"):
        read(data, fmt, chunk=chunk)
