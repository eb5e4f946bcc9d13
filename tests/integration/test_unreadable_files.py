"""Files no reader can read, end to end (issue #5): HTTP upload -> real worker. Each fails its
job at the first attempt (a file error is final, never retried) with the precise message that
says what is wrong: encoding, line endings, an unbalanced quote, empty or header-only files, a
repeated or unreadable header, a JSON file that is not an array of objects.
"""

from __future__ import annotations

import gzip

import pytest

from tests.support.handmade import GOOD, HEADER
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

FAILS = [
    pytest.param(
        HEADER + b",\xe9t\xe9@example.com,A,admin,2024-01-01\n",
        "u.csv",
        "the file is not valid UTF-8: byte 0xe9 at offset 31 (line 2)",
        id="non-utf8",
    ),
    pytest.param(
        HEADER.decode().encode("utf-16"), "u.csv", "UTF-16 (or UTF-32) byte-order mark", id="utf16"
    ),
    pytest.param(
        HEADER.replace(b"\n", b"\r") + GOOD + b"\r",
        "u.csv",
        "the file seems to use CR-only line endings",
        id="cr-only-line-endings",
    ),
    pytest.param(
        HEADER + b',"ann@example.com,Ann,admin,2024-01-01\n' + GOOD + b"\n",
        "u.csv",
        "the CSV file ends inside a quoted field (an unbalanced quote)",
        id="unbalanced-quote",
    ),
    pytest.param(gzip.compress(b""), "u.csv.gz", "the file is empty", id="empty-csv"),
    pytest.param(gzip.compress(b"\n \n"), "u.ndjson.gz", "the file holds no records", id="blank"),
    pytest.param(HEADER, "u.csv", "the CSV file has a header but no records", id="header-only"),
    pytest.param(b" [ ] ", "u.json", "the JSON array is empty", id="empty-json-array"),
    pytest.param(
        b"id,email,name,email,role,created_at\n" + b",a@b.cd,A,b@b.cd,admin,2024-01-01\n",
        "u.csv",
        "the CSV header repeats column(s): email",
        id="duplicate-header",
    ),
    pytest.param(
        b"id,email,name\x00,role,created_at\n,a@b.cd,A,admin,2024-01-01\n",
        "u.csv",
        "the CSV header lacks required column(s): name; found: id, email, name\u2400, role, "
        "created_at",
        id="nul-in-header-names",
    ),
    pytest.param(
        b'{"id": "x"}', "u.json", "a JSON file must hold one array of objects", id="json-object"
    ),
]


@pytest.mark.parametrize(("data", "filename", "message"), FAILS)
def test_unreadable_files_fail_the_job_with_a_precise_message(
    service: Bulkio, data: bytes, filename: str, message: str
) -> None:
    job = service.import_bytes(data, filename)
    assert job["status"] == "failed", job
    assert message in job["error"], job["error"]
    assert job["attempts"] == 1, "a file error is final: it must not be retried"
