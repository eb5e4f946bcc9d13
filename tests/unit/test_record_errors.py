"""Hostile records, one by one (issue #5), through the readers and the validator — no servers:
each gives its precise error rows (row, line, field, code, message), never a crash, and no NUL
reaches a valid row; unknown columns and keys are reported once, as a warning.
(Whole-file failures: test_file_errors.py; fuzzing: test_fuzz_*.py.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.formats.parse import MAX_FIELDS, MAX_JSON_DEPTH
from engine.formats.reader import Header, Position
from engine.imports.validate import validate
from engine.resources import catalog
from tests.support.readers import USERS, outcome, read, read_users

H = b"id,email,name,role,created_at\n"
OK = b",a@b.cd,Ann,admin,2024-01-01T00:00:00Z"

NUL_MSG = "name must not contain NUL (\\x00) characters: PostgreSQL text cannot hold them"
QUOTE_MSG = (
    'a quote (") inside an unquoted field or after a closing quote: enclose the whole field in '
    'quotes and double each quote inside it ("")'
)


@pytest.mark.parametrize(
    ("data", "fmt", "expected"),
    [
        pytest.param(b"\xef\xbb\xbf" + H + OK + b"\n", "csv", [], id="utf8-bom"),
        pytest.param(H.replace(b"\n", b"\r\n") + OK + b"\r\n" + OK + b"\r\n", "csv", [], id="crlf"),
        pytest.param(H + OK + b"\r\n" + OK + b"\n", "csv", [], id="mixed-crlf-and-lf"),
        pytest.param(
            H + b',a@b.cd,"Ann\r\nB\rC",admin,2024-01-01\n' + OK + b"\n",
            "csv",
            [],
            id="cr-and-crlf-inside-quotes-are-data",
        ),
        pytest.param(
            H + OK + b"\r" + OK + b"\n",
            "csv",
            [
                (
                    1,
                    2,
                    None,
                    "malformed_record",
                    "expected 5 fields (the header's), found 9 (it holds a carriage return (CR) "
                    "without a line feed: records end with LF or CRLF)",
                )
            ],
            id="bare-cr-between-records-is-one-ragged-record",
        ),
        pytest.param(
            H + b",a@b.cd,A\x00B,admin,2024-01-01\n" + OK + b"\n",
            "csv",
            [
                (
                    1,
                    2,
                    "name",
                    "invalid_format",
                    NUL_MSG,
                )
            ],
            id="nul-in-text",
        ),
        pytest.param(
            b'{"email":"a@b.cd","name":"A\\u0000B","role":"admin","created_at":"2024-01-01"}\n',
            "ndjson",
            [
                (
                    1,
                    1,
                    "name",
                    "invalid_format",
                    NUL_MSG,
                )
            ],
            id="escaped-nul-in-json-text",
        ),
        pytest.param(
            b'{"email":"a@b.cd","name":"A\x00B","role":"admin","created_at":"2024-01-01"}\n',
            "ndjson",
            [(1, 1, None, "malformed_record", "the line is not a valid JSON object")],
            id="raw-nul-in-json-is-invalid-json",
        ),
        pytest.param(
            H + b',a@b.cd,A"nn,admin,2024-01-01\n' + OK + b"\n" + b',c@b.cd,C"y,admin,2024-01-01\n',
            "csv",
            [(1, 2, None, "malformed_record", QUOTE_MSG)],
            id="stray-quotes-pair-up-across-lines",
        ),
        pytest.param(
            H + b',a@b.cd,"Ann"x,admin,2024-01-01\n' + OK + b"\n",
            "csv",
            [(1, 2, None, "malformed_record", QUOTE_MSG)],
            id="text-after-closing-quote",
        ),
        pytest.param(
            b'[1, "x", null, [1], true, {"email":"a@b.cd","name":"A","role":"admin",'
            b'"created_at":"2024-01-01"}]',
            "json",
            [
                (
                    row,
                    1,
                    None,
                    "malformed_record",
                    f"the element of the JSON array holds {k}, not a JSON object",
                )
                for row, k in enumerate(
                    ("a number", "a string", "null", "an array", "a boolean"), start=1
                )
            ],
            id="json-array-elements-that-are-not-objects",
        ),
        pytest.param(
            b'{"email":'
            + b"[" * 100
            + b"]" * 100
            + b"}\n"
            + b'{"email":'
            + b"[" * 63
            + b"]" * 63
            + b"}\n",
            "ndjson",
            [
                (
                    1,
                    1,
                    None,
                    "malformed_record",
                    f"the record nests arrays/objects 101 levels deep; at most {MAX_JSON_DEPTH} "
                    "are accepted",
                ),
                (2, 2, "created_at", "required", "created_at is required"),
                (2, 2, "email", "invalid_format", "email must be a JSON string; got an array"),
                (2, 2, "name", "required", "name is required"),
                (2, 2, "role", "required", "role is required"),
            ],
            id="json-nesting-cap",
        ),
        pytest.param(
            json.dumps({f"k{i}": i for i in range(MAX_FIELDS + 1)}).encode() + b"\n",
            "ndjson",
            [
                (
                    1,
                    1,
                    None,
                    "malformed_record",
                    f"the object has {MAX_FIELDS + 1} fields; at most {MAX_FIELDS} are accepted",
                )
            ],
            id="json-field-count-cap",
        ),
    ],
)
def test_hostile_records_give_precise_error_rows(
    data: bytes, fmt: str, expected: list[tuple[Any, ...]]
) -> None:
    assert read_users(data, fmt, cap=10**6) == expected


@pytest.mark.parametrize(
    ("data", "fmt", "warning"),
    [
        (
            b"id,email,name,role,created_at,color,\x00\n" + OK + b",red,x\n",
            "csv",
            "ignored unknown column(s): color, \u2400",
        ),
        (
            b'{"email":"a@b.cd","color":"red","z\\u0000":1}\n{"size":1}\n',
            "ndjson",
            "ignored unknown key(s): color, size, z\u2400",
        ),
        (
            b'[{"email":"a@b.cd","color":"red"},\n{"size":1}]',
            "json",
            "ignored unknown key(s): color, size",
        ),
    ],
)
def test_unknown_columns_and_keys_are_reported_once(data: bytes, fmt: str, warning: str) -> None:
    headers: list[Header] = []
    read(data, fmt, columns=USERS.column_names, required=USERS.required_columns, headers=headers)
    assert headers[0].warnings == [warning]
    resumed: list[Header] = []
    read(data, fmt, columns=USERS.column_names, start=Position(1, 1, 2, 1), headers=resumed)
    assert resumed[0].warnings in ([], [warning])  # CSV's come from the header itself


def test_known_keys_only_give_no_warning() -> None:
    headers: list[Header] = []
    read(b'{"id":"1","name":"a"}\n{"x":null}\n', "ndjson", headers=headers)
    assert headers[0].warnings == []


def test_a_cr_before_a_separator_reads_as_part_of_a_line_ending() -> None:
    """Documented behaviour: a CR inside an unquoted field is data, but one right before a
    comma or the line end is read as (part of) a CRLF and dropped; quoting keeps it."""
    batches = read(b'id,name,x\n1,a\rb,c\r\n2,a\r,"c\r"\n', "csv")
    assert [(r["name"], r["x"]) for r in outcome(batches)[0]] == [("a\rb", "c"), ("a", "c\r")]


@pytest.mark.parametrize("resource", ["users", "articles", "comments"])
def test_a_batch_of_only_malformed_records_validates_to_nothing(resource: str) -> None:
    """Regression: validate() on a 0-row frame raised for articles (an untyped all-False mask
    for tags), failing every attempt of a job whose whole batch was malformed."""
    res = catalog()[resource]
    batches = read(b"[1]\n", "ndjson", columns=res.column_names)
    checked = validate(batches[0].frame, res)
    assert (checked.valid.height, checked.errors.height) == (0, 0)
    assert batches[0].errors["row"].to_list() == [1]
