"""Hostile records, end to end (issue #5): HTTP upload -> real worker -> PostgreSQL. Each gives
its precise error rows, never a crash, a retry loop or a 5xx — including values PostgreSQL text
cannot store (NUL), which become error rows instead of failing the batch; unknown columns and
keys are ignored and reported once.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.handmade import GOOD, HEADER, csv_row, json_object
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

#: 65 nested arrays: with the object around them, one level more than MAX_JSON_DEPTH
DEEP: Any = []
for _ in range(64):
    DEEP = [DEEP]
NUL_TEXT = "name must not contain NUL (\\x00) characters: PostgreSQL text cannot hold them"


ERROR_ROWS = [
    pytest.param(
        b"\xef\xbb\xbf"
        + HEADER.replace(b"\n", b"\r\n")
        + GOOD
        + b"\r\n"
        + csv_row(2, "bob@example.com")
        + b"\n"
        + csv_row(3, "cy@example.com")
        + b"\r\n",
        "u.csv",
        3,
        [],
        id="bom-crlf-and-mixed-line-endings",
    ),
    pytest.param(
        HEADER + csv_row(1, "ann@example.com", b"A\x00nn") + b"\n" + csv_row(2, "bob@example.com"),
        "u.csv",
        1,
        [(1, 2, "name", "invalid_format", NUL_TEXT, "A\u2400nn")],
        id="nul-in-csv-text",
    ),
    pytest.param(
        "\n".join(
            [
                json_object(1, "a@b.cd", "A\x00"),  # an escaped NUL (\u0000): valid JSON
                json_object(2, "b@b.cd", "B@").replace("B@", "B\x00"),  # a raw NUL: invalid JSON
                json_object(3, "c@b.cd"),
            ]
        ).encode(),
        "u.ndjson",
        1,
        [
            (1, 1, "name", "invalid_format", NUL_TEXT, "A\u2400"),
            (
                2,
                2,
                None,
                "malformed_record",
                "the line is not a valid JSON object",
                json_object(2, "b@b.cd", "B\u2400"),
            ),
        ],
        id="nul-in-json",
    ),
    pytest.param(
        HEADER
        + csv_row(1, "ann@example.com", b'A"nn')
        + b"\n"
        + csv_row(2, "bob@example.com")
        + b"\n"
        + csv_row(3, "cy@example.com", b'C"y')
        + b"\n"
        + csv_row(4, "di@example.com")
        + b"\n",
        "u.csv",
        1,
        [
            (
                1,
                2,
                None,
                "malformed_record",
                'a quote (") inside an unquoted field or after a closing quote: enclose the whole '
                'field in quotes and double each quote inside it ("")',
                None,
            )
        ],
        id="stray-quote",
    ),
    pytest.param(
        f'[7, "x", {json_object(1, "a@b.cd")}]'.encode(),
        "u.json",
        1,
        [
            (
                1,
                1,
                None,
                "malformed_record",
                "the element of the JSON array holds a number, not a JSON object",
                "7",
            ),
            (
                2,
                1,
                None,
                "malformed_record",
                "the element of the JSON array holds a string, not a JSON object",
                '"x"',
            ),
        ],
        id="json-values-that-are-not-objects",
    ),
    pytest.param(
        json_object(1, "a@b.cd", extra={"x": DEEP}).encode() + b"\n",
        "u.ndjson",
        0,
        [
            (
                1,
                1,
                None,
                "malformed_record",
                "the record nests arrays/objects 66 levels deep; at most 64 are accepted",
                json_object(1, "a@b.cd", extra={"x": DEEP}),
            ),
        ],
        id="json-nesting-cap",
    ),
]


@pytest.mark.parametrize(("data", "filename", "successful", "errors"), ERROR_ROWS)
def test_hostile_records_become_precise_error_rows(
    service: Bulkio,
    db: psycopg.Connection[Any],
    data: bytes,
    filename: str,
    successful: int,
    errors: list[tuple[Any, ...]],
) -> None:
    job = service.import_bytes(data, filename)
    assert job["status"] == "completed", job
    assert (job["successful"], job["failed"]) == (successful, len(errors)), job["errors"]
    got = [
        (e["row"], e["line"], e["field"], e["code"], e["message"], e["value"])
        for e in service.errors(job["job_id"])
    ]
    assert got == errors
    assert db.execute("SELECT count(*) FROM users").fetchone() == (successful,)


def test_a_batch_of_only_malformed_articles_completes_with_error_rows(service: Bulkio) -> None:
    """Regression: validation raised on a 0-row articles batch, so the job was retried to death."""
    job = service.import_bytes(b'[1]\n"two"\nnull\n', "a.ndjson", resource="articles")
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 3, 3), job
    assert [e["code"] for e in job["errors"]] == ["malformed_record"] * 3


@pytest.mark.parametrize(
    ("data", "filename", "warning"),
    [
        (
            b"id,email,name,role,created_at,color,n\x00te\n" + GOOD + b",red,x\n",
            "u.csv",
            "ignored unknown column(s): color, n\u2400te",
        ),
        (
            (
                json_object(1, "a@b.cd", extra={"color": 1})
                + "\n"
                + json_object(2, "b@b.cd", extra={"k\x00": 1})
            ).encode(),
            "u.ndjson",
            "ignored unknown key(s): color, k\u2400",
        ),
        (
            f"[{json_object(1, 'a@b.cd', extra={'color': 1})}]".encode(),
            "u.json",
            "ignored unknown key(s): color",
        ),
    ],
)
def test_unknown_columns_and_keys_are_ignored_and_reported_once(
    service: Bulkio, data: bytes, filename: str, warning: str
) -> None:
    job = service.import_bytes(data, filename)
    assert job["status"] == "completed", job
    assert job["failed"] == 0 and job["successful"] >= 1
    assert job["warnings"] == [warning]
