"""Export jobs on S3 (moto in server mode): streaming multipart upload, presigned download URL
fetched over real HTTP, expiry taken from the setting and re-issued on every status call.

moto's server was seen to serve a presigned URL after it expired, so the expiry is checked on
the signed parameters here; refusal after expiry is proven on bulkio's own signed URLs
(``test_exports.py::test_signed_urls_refuse_tampering_and_expiry``).
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.database import migrated_database
from tests.support.servers import PostgresServer
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

TTL = 120
USERS = 60_000  # ~13 MB of NDJSON: more than one 8 MiB part of the multipart upload


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This module's own database (overrides the session's)."""
    yield from migrated_database(pg_server)


@pytest.fixture(scope="module")
def s3_bulkio(
    database_url: str, redis_server: Any, s3_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Bulkio, str]]:
    env = {
        **s3_server.env(),
        "BULKIO_DATABASE_URL": database_url,
        "BULKIO_REDIS_URL": redis_server.url(5),
        "BULKIO_QUEUE_NAME": "bulkio-s3-test",
        "BULKIO_DOWNLOAD_URL_TTL_SECONDS": str(TTL),
        "BULKIO_SIGNING_SECRET": "s3-test-secret",
    }
    service = Bulkio(env, Path(tmp_path_factory.mktemp("bulkio-s3")), workers=1)
    yield service, database_url
    service.stop()


def test_export_job_uploads_to_s3_and_presigns_a_short_lived_url(
    s3_bulkio: tuple[Bulkio, str], s3_server: Any
) -> None:
    service, url = s3_bulkio
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "INSERT INTO users (id, email, name, role, created_at) "
            "SELECT md5('s' || g)::uuid, 's' || g || '@example.com', 'S3 user ' || g, "
            "'reader', now() FROM generate_series(1, %s) g",
            (USERS,),
        )
        ids = [str(r[0]) for r in db.execute("SELECT id FROM users ORDER BY id")]
    res = service.client.post("/v1/exports", json={"resource": "users", "format": "ndjson"})
    assert res.status_code == 202, res.text
    job = service.wait(res.json()["job_id"], kind="exports")
    assert job["status"] == "completed", job
    assert job["processed"] == USERS and job["download_expires_in"] == TTL

    signed = httpx.URL(job["download_url"])
    assert str(signed).startswith(f"{s3_server.endpoint}/{s3_server.bucket}/exports/")
    assert int(signed.params["X-Amz-Expires"]) <= TTL
    issued = datetime.strptime(signed.params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - issued).total_seconds()) < 60
    with httpx.Client() as anonymous:  # plain HTTP to the S3 server, no bulkio involved
        got = anonymous.get(str(signed))
    assert got.status_code == 200
    assert len(got.content) == job["result_bytes"]
    assert [json.loads(line)["id"] for line in got.content.splitlines()] == ids

    key = f"exports/{job['job_id']}/users.ndjson"
    client = s3_server.client()
    try:
        head = client.head_object(Bucket=s3_server.bucket, Key=key)
    finally:
        client.close()
    assert head["ContentLength"] == job["result_bytes"]
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload of two parts

    time.sleep(1.1)
    again = service.client.get(f"/v1/exports/{job['job_id']}").json()["download_url"]
    assert again != job["download_url"]  # signed afresh on every status call
    assert int(httpx.URL(again).params["X-Amz-Expires"]) <= TTL


def test_gzip_export_job_on_s3(s3_bulkio: tuple[Bulkio, str]) -> None:
    service, _ = s3_bulkio
    body = {
        "resource": "users",
        "format": "json",
        "compression": "gzip",
        "fields": ["id"],
        "filters": {"role": "reader", "ids": ["4ec1ad06-a1a4-4b3e-8d8c-1f0e4a3a0e7e"]},
    }
    job = service.wait(
        service.client.post("/v1/exports", json=body).json()["job_id"], kind="exports"
    )
    assert job["status"] == "completed" and job["file_name"] == "users.json.gz", job
    with httpx.Client() as anonymous:
        data = anonymous.get(job["download_url"]).content
    assert json.loads(gzip.decompress(data)) == []
