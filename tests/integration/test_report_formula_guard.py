"""The error report's CSV echoes user input (``value``): its cells get the formula guard too,
including formulas behind leading blanks."""

from __future__ import annotations

import csv
import io

import pytest

from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

ID = "00000000-0000-4000-8000-00000000000"
#: (email, role) of each record; every one is rejected, so each value comes back in the report.
RECORDS = [
    ("  =cmd|' /C calc'!A0", "admin"),  # email: invalid_format
    ("ann@example.com", "\t=1+1"),  # role: invalid_value
    ("\u00a0@SUM(1)", "admin"),
    ("bob@example.com", " -2+3"),
    ("plain-not-an-email", "admin"),  # no formula: unchanged
]


def _upload(records: list[tuple[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "email", "name", "role", "created_at"])
    for n, (email, role) in enumerate(records, start=1):
        writer.writerow([f"{ID}{n}", email, "N", role, "2024-01-01"])
    return out.getvalue().encode()


def test_the_csv_error_report_neutralises_formulas_behind_blanks(service: Bulkio) -> None:
    res = service.upload(None, "users", fmt="csv", data=_upload(RECORDS), filename="u.csv")
    assert res.status_code == 202, res.text
    job = service.wait(res.json()["job_id"])
    assert job["status"] == "completed" and job["failed"] == len(RECORDS), job

    report = service.error_report(job["job_id"], "csv")
    assert report.status_code == 200, report.text
    values = [r["value"] for r in csv.DictReader(io.StringIO(report.text, newline=""))]
    assert values == [
        "'  =cmd|' /C calc'!A0",
        "'\t=1+1",
        "'\u00a0@SUM(1)",
        "' -2+3",
        "plain-not-an-email",
    ]
    # NDJSON is for programs: values as sent.
    ndjson = service.error_report(job["job_id"], "ndjson").text
    assert "\"  =cmd|' /C calc'!A0\"" in ndjson
