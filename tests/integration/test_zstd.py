"""zstd end to end (issue #12): compressed uploads are imported like plain ones, broken ones fail
the job with a clear message; exports come as zstd by ``Accept-Encoding`` (Content-Encoding), by
``compression=zstd`` (a .zst file) and from export jobs."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pytest

from tests.integration.test_exports import export, ndjson, run_job, seed, table
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration


def zstd(data: bytes) -> bytes:
    return pa.Codec("zstd").compress(data, asbytes=True)


def unzstd(data: bytes) -> bytes:
    with pa.CompressedInputStream(pa.BufferReader(data), "zstd") as stream:
        return stream.read()


def test_zstd_uploads_import_like_the_plain_file(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed(db, users=2500, articles=300)
    users = export(service, "users", "csv", formula_guard="false").content
    articles = export(service, "articles", "ndjson").content
    expected = {r: table(db, r) for r in ("users", "articles")}
    db.execute("TRUNCATE comments, articles, users")
    # Frames one after another, as `zstd` writes a file compressed in pieces.
    half = len(users) // 2
    packed = zstd(users[:half]) + zstd(b"") + zstd(users[half:])
    job = service.import_bytes(packed, "users.csv.zst")
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 2500, 0), job
    job = service.import_bytes(zstd(articles), "a.ndjson.zst", "articles")
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 300, 0), job
    assert {r: table(db, r) for r in ("users", "articles")} == expected


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda d: d[: len(d) // 2], "the zstd stream is truncated (the upload may be incomplete)"),
        (lambda d: d[:4] + b"garbage" * 10, "the file looks like zstd but cannot be decompressed"),
    ],
    ids=["truncated", "corrupt"],
)
def test_a_truncated_or_corrupt_zstd_upload_fails_the_job_with_a_clear_message(
    service: Bulkio, db: psycopg.Connection[Any], cut: Any, message: str
) -> None:
    seed(db, users=3000)
    data = export(service, "users", "ndjson").content
    db.execute("TRUNCATE comments, articles, users")
    job = service.import_bytes(cut(zstd(data)), "u.ndjson.zst")
    assert job["status"] == "failed", job
    assert message in job["error"], job


def test_zstd_exports_by_parameter_or_by_accept_encoding(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    seed(db, users=3000)
    plain = export(service, "users", headers={"Accept-Encoding": "identity"}).content
    assert len(ndjson(httpx.Response(200, content=plain))) == 3000
    res = service.client.get(
        "/v1/exports",
        params={"resource": "users", "compression": "zstd"},
        headers={"Accept-Encoding": "identity"},
    )
    assert res.headers["content-type"] == "application/zstd"
    assert res.headers["content-disposition"] == 'attachment; filename="users.ndjson.zst"'
    assert "content-encoding" not in res.headers
    assert res.content[:4] == b"\x28\xb5\x2f\xfd" and unzstd(res.content) == plain
    for accepted in ("zstd", "gzip;q=0.5, zstd", "gzip, deflate, br, zstd"):
        headers = {"Accept-Encoding": accepted}
        with service.client.stream(
            "GET", "/v1/exports", params={"resource": "users"}, headers=headers
        ) as res:
            assert res.headers["content-encoding"] == "zstd", accepted
            assert res.headers["content-type"] == "application/x-ndjson"
            raw = b"".join(res.iter_raw())
        assert len(raw) < len(plain) / 3 and unzstd(raw) == plain
    with service.client.stream(
        "GET",
        "/v1/exports",
        params={"resource": "users"},
        headers={"Accept-Encoding": "zstd;q=0.2, gzip"},
    ) as res:
        assert res.headers["content-encoding"] == "gzip"
    parquet = service.client.get(
        "/v1/exports", params={"resource": "users", "format": "parquet"},
        headers={"Accept-Encoding": "zstd"},
    )  # fmt: skip
    assert "content-encoding" not in parquet.headers  # compressed inside already
    assert parquet.content[:4] == b"PAR1"


def test_an_export_job_writes_a_zst_file(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed(db, users=4000)
    job = run_job(service, {"resource": "users", "format": "csv", "compression": "zstd"})
    assert job["file_name"] == "users.csv.zst", job
    with httpx.Client() as anonymous:
        res = anonymous.get(job["download_url"])
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "application/zstd"
    assert int(res.headers["content-length"]) == job["result_bytes"] == len(res.content)
    streamed = export(service, "users", "csv", headers={"Accept-Encoding": "identity"})
    assert unzstd(res.content) == streamed.content
    bad = service.client.post("/v1/exports", json={"resource": "users", "compression": "brotli"})
    assert bad.status_code == 400 and "gzip, zstd" in bad.json()["detail"], bad.text
