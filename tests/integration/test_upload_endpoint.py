"""The upload endpoint against hostile requests (issue #5): client file names are never used as
paths, and malformed multipart bodies (no boundary, garbage, no closing boundary, no file, an
empty file, overlong fields or boundaries, non-Latin-1 part headers, NUL in a file name) are a
400 problem, never a server error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.handmade import GOOD, HEADER
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration


def multipart(parts: list[tuple[str, bytes]], boundary: bytes = b"XyZ") -> tuple[bytes, str]:
    """A hand-made multipart body (httpx would escape the hostile bits we want to send)."""
    body = b"".join(
        b"--"
        + boundary
        + b"\r\nContent-Disposition: form-data; "
        + head
        + b"\r\n\r\n"
        + data
        + b"\r\n"
        for head, data in ((h.encode("utf-8", "surrogateescape"), d) for h, d in parts)
    )
    return body + b"--" + boundary + b"--\r\n", f"multipart/form-data; boundary={boundary.decode()}"


def test_file_names_from_clients_are_never_used_as_paths(service: Bulkio) -> None:
    root = Path(service.env["BULKIO_STORAGE_URL"].removeprefix("file://"))
    outside = root.parent / "escaped.csv"
    names = [
        "../escaped.csv",
        "../../../../../../tmp/escaped.csv",
        "/etc/escaped.csv",
        "..\\..\\escaped.csv",
        "imports/x/source.csv",
        "~/.ssh/x.csv",
    ]
    for name in names:
        res = service.upload(None, "users", data=HEADER + GOOD + b"\n", filename=name)
        assert res.status_code == 202, res.text
        job = service.wait(res.json()["job_id"])
        assert job["status"] == "completed" and job["file_name"] == name
        assert (root / "imports" / job["job_id"] / "source").is_file()
        report = service.error_report(job["job_id"])
        assert report.headers["content-disposition"] == (
            f'attachment; filename="errors-{job["job_id"]}.ndjson"'
        )
    assert not outside.exists() and not Path("/tmp/escaped.csv").exists()
    assert not Path("/etc/escaped.csv").exists()
    stored = {p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()}
    assert stored <= {"imports", "exports"}


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"x", "multipart/form-data", "expected multipart/form-data with a boundary"),
        (b"garbage\x00\xff", "multipart/form-data; boundary=XX", "malformed multipart body"),
        (
            b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\nid\n',
            "multipart/form-data; boundary=XX",
            "the multipart body ended before its closing boundary",
        ),
        (
            multipart([('name="resource"', b"users")])[0],
            multipart([])[1],
            "the multipart form has no 'file' field",
        ),
        (
            multipart([('name="resource"', b"users"), ('name="file"; filename="u.csv"', b"")])[0],
            multipart([])[1],
            "the uploaded file is empty",
        ),
        (
            multipart([('name="resource"', b"u" * 5000), ('name="file"', b"x")])[0],
            multipart([])[1],
            "form field 'resource' is too long",
        ),
    ],
)
def test_malformed_multipart_is_a_400_problem(
    service: Bulkio, body: bytes, content_type: str, detail: str
) -> None:
    res = service.client.post("/v1/imports", content=body, headers={"content-type": content_type})
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert detail in res.json()["detail"]


def test_an_overlong_multipart_boundary_is_a_400(service: Bulkio) -> None:
    body, _ = multipart([('name="file"', b"x")], boundary=b"b" * 300)
    res = service.client.post(
        "/v1/imports",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=" + "b" * 300},
    )
    assert res.status_code == 400, res.text


def test_a_part_header_that_is_not_latin1_is_a_400(service: Bulkio) -> None:
    body = b"--XX\r\nContent-Disposition: \xff\xfe; name=file\r\n\r\nid\n\r\n--XX--\r\n"
    res = service.client.post(
        "/v1/imports", content=body, headers={"content-type": "multipart/form-data; boundary=XX"}
    )
    assert res.status_code == 400, res.text


@pytest.mark.parametrize("via", ["multipart", "query"])
def test_a_file_name_with_nul_is_not_a_server_error(service: Bulkio, via: str) -> None:
    if via == "multipart":
        body, ctype = multipart(
            [('name="resource"', b"users"), ('name="file"; filename="u\x00.csv"', HEADER + GOOD)]
        )
        res = service.client.post("/v1/imports", content=body, headers={"content-type": ctype})
    else:
        res = service.client.post(
            "/v1/imports",
            params={"resource": "users", "filename": "u\x00.csv"},
            content=HEADER + GOOD,
        )
    assert res.status_code < 500, res.text
