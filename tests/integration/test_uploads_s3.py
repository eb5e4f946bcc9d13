"""Upload sessions on S3 (moto in server mode) through the real service: presigned part URLs the
test PUTs to with plain HTTP (no bulkio in between), parts skipped and sent later, completion
checked against ListParts and the SHA-256 of the assembled object, the import exact, a checksum
mismatch refused, and abandoned multipart uploads aborted by the retention run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from engine.retention import cleanup
from engine.settings import Settings
from engine.storage import open_storage, signed_query
from tests.support.database import empty, migrated_database
from tests.support.datafiles import make
from tests.support.servers import PostgresServer
from tests.support.service import Bulkio, make_token
from tests.support.uploads import (
    CutOnce,
    check_import,
    import_upload,
    in_process,
    open_upload,
    sha256_of,
)

pytestmark = pytest.mark.integration

PART = 5 * 1024 * 1024  # S3's smallest part: files of a few MiB span several parts
TTL = 600


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
        "BULKIO_REDIS_URL": redis_server.url(6),
        "BULKIO_QUEUE_NAME": "bulkio-uploads-s3-test",
        "BULKIO_SIGNING_SECRET": "s3-uploads-test-secret",
        "BULKIO_BATCH_ROWS": "5000",
        "BULKIO_UPLOAD_PART_BYTES": str(PART),
        "BULKIO_UPLOAD_URL_TTL_SECONDS": str(TTL),
    }
    service = Bulkio(env, Path(tmp_path_factory.mktemp("bulkio-uploads-s3")), workers=1)
    yield service, database_url
    service.stop()


@pytest.fixture
def s3(s3_bulkio: tuple[Bulkio, str], s3_server: Any, db: psycopg.Connection[Any]) -> Iterator[Any]:
    """A boto3 client of the S3 server; the tables start empty (each test's import is exact)."""
    empty(db)
    client = s3_server.client()
    yield client
    client.close()


def put_part(url: str, data: bytes) -> str:
    with httpx.Client(timeout=60) as anonymous:  # straight to S3: no token, no bulkio
        res = anonymous.put(url, content=data)
    assert res.status_code == 200, res.text
    return str(res.headers["etag"])


def pending(s3: Any, bucket: str) -> list[tuple[str, str]]:
    found = s3.list_multipart_uploads(Bucket=bucket, Prefix="uploads/").get("Uploads", [])
    return sorted((u["Key"], u["UploadId"]) for u in found)


def test_parts_skipped_then_sent_complete_to_an_exact_import(
    s3_bulkio: tuple[Bulkio, str], s3: Any, s3_server: Any, tmp_path_factory: Any
) -> None:
    service, url = s3_bulkio
    path, expected = make(tmp_path_factory.mktemp("data"), "users", "ndjson", 50_000, seed=1301)
    data = path.read_bytes()
    assert 2 * PART < len(data) <= 3 * PART, len(data)
    view = open_upload(service, path, data)
    assert (view["storage"], view["part_size"], view["parts_count"]) == ("s3", PART, 3)
    assert view["data_url"] is None and view["urls_expire_in"] == TTL
    parts = view["parts"]
    assert [(p["part_number"], p["size"], p["etag"]) for p in parts] == [
        (1, PART, None), (2, PART, None), (3, len(data) - 2 * PART, None)
    ]  # fmt: skip
    first = httpx.URL(parts[0]["url"])
    assert str(first).startswith(f"{s3_server.endpoint}/{s3_server.bucket}/uploads/")
    assert first.params["partNumber"] == "1" and int(first.params["X-Amz-Expires"]) == TTL

    # Parts 1 and 3 arrive; the connection breaks before part 2.
    etags = {
        1: put_part(parts[0]["url"], data[:PART]),
        3: put_part(parts[2]["url"], data[2 * PART :]),
    }
    early = service.client.post(
        f"/v1/uploads/{view['upload_id']}/complete",
        json={"parts": [{"part_number": n, "etag": e} for n, e in etags.items()]},
    )
    assert early.status_code == 409, early.text
    assert "parts 2 of 3 have not arrived" in early.json()["detail"]

    # Resume: the upload lists what arrived and a fresh URL for the rest.
    resumed = service.client.get(f"/v1/uploads/{view['upload_id']}").json()
    assert resumed["status"] == "open" and resumed["received_bytes"] == len(data) - PART
    arrived = {p["part_number"]: p for p in resumed["parts"]}
    assert arrived[1]["etag"] == etags[1].strip('"') and arrived[1]["url"] is None
    assert arrived[3]["size"] == len(data) - 2 * PART and arrived[3]["url"] is None
    assert arrived[2]["etag"] is None and arrived[2]["url"]
    etags[2] = put_part(arrived[2]["url"], data[PART : 2 * PART])

    stale = service.client.post(
        f"/v1/uploads/{view['upload_id']}/complete",
        json={"parts": [{"part_number": n, "etag": etags[1]} for n in (1, 2, 3)]},
    )
    assert stale.status_code == 409 and "ETags of parts 2, 3" in stale.json()["detail"]
    done = service.client.post(
        f"/v1/uploads/{view['upload_id']}/complete",
        json={"parts": [{"part_number": n, "etag": etags[n]} for n in (1, 2, 3)]},
    )
    assert done.status_code == 200, done.text
    assert done.json()["received_sha256"] == sha256_of(data)
    assert done.json()["parts"] == [] and done.json()["received_bytes"] == len(data)
    head = s3.head_object(Bucket=s3_server.bucket, Key=f"uploads/{view['upload_id']}/data")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    assert pending(s3, s3_server.bucket) == []

    res = import_upload(service, view["upload_id"], resource="users")
    assert res.status_code == 202, res.text
    job = service.wait(res.json()["job_id"], timeout=300)
    check_import(service, job, expected)
    with psycopg.connect(url) as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (expected.successful,)

    # Someone else's token sees nothing of it.
    other = service.client_for(make_token(url, "mallory", ["imports:write"]))
    assert other.get(f"/v1/uploads/{view['upload_id']}").status_code == 404
    # An S3 upload has no data URL to PATCH, even with a valid signature.
    data_path = f"/v1/uploads/{view['upload_id']}/data"
    query = signed_query(service.env["BULKIO_SIGNING_SECRET"].encode(), data_path, 60)
    with httpx.Client(base_url=f"http://127.0.0.1:{service.port}") as anonymous:
        res = anonymous.head(data_path, params=query)
    assert res.status_code == 404


def test_a_checksum_mismatch_on_s3_is_refused_and_the_object_deleted(
    s3_bulkio: tuple[Bulkio, str], s3: Any, s3_server: Any, tmp_path: Path
) -> None:
    service, _ = s3_bulkio
    path = tmp_path / "users.ndjson"
    data = b'{"email": "a@example.com", "name": "A", "role": "reader"}\n' * 1000
    path.write_bytes(data)
    view = open_upload(service, path, data, sha256=sha256_of(b"something else"))
    assert [p["size"] for p in view["parts"]] == [len(data)]  # one part: may be under 5 MiB
    put_part(view["parts"][0]["url"], data)
    res = service.client.post(f"/v1/uploads/{view['upload_id']}/complete")  # S3 lists the parts
    assert res.status_code == 422, res.text
    assert res.json()["received_sha256"] == sha256_of(data)
    assert res.json()["declared_sha256"] == sha256_of(b"something else")
    key = f"uploads/{view['upload_id']}/data"
    assert s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=key).get("KeyCount") == 0
    assert import_upload(service, view["upload_id"], resource="users").status_code == 409


def test_expiry_aborts_abandoned_multipart_uploads(
    s3_bulkio: tuple[Bulkio, str], s3: Any, s3_server: Any, tmp_path: Path
) -> None:
    service, url = s3_bulkio
    path = tmp_path / "big.csv"
    data = b"x" * (PART + 10)
    path.write_bytes(data)
    abandoned = open_upload(service, path, data)
    put_part(abandoned["parts"][0]["url"], data[:PART])
    kept = open_upload(service, path, data)
    # A multipart upload under uploads/ that no row owns (the API died before its row was made).
    stray = s3.create_multipart_upload(Bucket=s3_server.bucket, Key=f"uploads/{uuid.uuid4()}/data")
    keys = {u[0] for u in pending(s3, s3_server.bucket)}
    assert f"uploads/{abandoned['upload_id']}/data" in keys and len(keys) == 3

    storage = open_storage(Settings(**{k.removeprefix("BULKIO_").lower(): v for k, v in
                                       s3_server.env().items()}))  # fmt: skip
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = %s",
            (abandoned["upload_id"],),
        )
        report = cleanup(db, storage, timedelta(days=7))
    assert report.uploads == 1
    left = pending(s3, s3_server.bucket)
    assert [k for k, _ in left] == [f"uploads/{kept['upload_id']}/data"]  # ListMultipartUploads
    assert stray["UploadId"] not in {u for _, u in left}
    assert service.client.get(f"/v1/uploads/{abandoned['upload_id']}").status_code == 404
    assert service.client.get(f"/v1/uploads/{kept['upload_id']}").status_code == 200


def test_the_client_resumes_an_s3_upload_after_the_network_broke(
    s3_bulkio: tuple[Bulkio, str], s3: Any, s3_server: Any, tmp_path_factory: Any
) -> None:
    service, url = s3_bulkio
    path, expected = make(tmp_path_factory.mktemp("data"), "users", "ndjson", 50_000, seed=1302)
    size = path.stat().st_size
    # The PUT of part 2 loses its connection half way: S3 keeps nothing of it.
    transport = CutOnce("PUT", "partNumber=2", after=PART // 2)
    code, job, err = in_process(service, transport, "import", str(path), "-r", "users", "--direct")
    assert code == 0, err
    assert transport.cut and "the network broke" in err and "trying again" in err
    puts = [httpx.URL(u).params["partNumber"] for m, u, _ in transport.seen if m == "PUT"]
    assert sorted(puts) == ["1", "2", "2", "3"]  # only the broken part was sent again
    check_import(service, job, expected)
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT id::text, status, storage, size FROM uploads WHERE job_id = %s",
            (job["job_id"],),
        ).fetchone()
    assert row is not None and row[1:] == ("imported", "s3", size)
    assert f"uploads/{row[0]}/data" not in {k for k, _ in pending(s3, s3_server.bucket)}
