"""Upload sessions on the local store, through the real service (API + worker): tus-style appends
through signed data URLs, cut half way and resumed, completed with the SHA-256 check, imported
once (exact counts and error rows), refused to other owners, and expired by the retention run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from engine.retention import cleanup
from engine.settings import Settings
from engine.storage import open_storage
from tests.support.datafiles import make
from tests.support.service import Bulkio, make_token
from tests.support.uploads import (
    check_import,
    cut_patch,
    import_upload,
    open_upload,
    settled_offset,
    sha256_of,
)

pytestmark = pytest.mark.integration

ROWS = 3000


@pytest.fixture
def anonymous() -> Any:
    with httpx.Client(timeout=30) as client:  # the data URL's signature is the credential
        yield client


def test_an_upload_cut_half_way_is_resumed_completed_and_imported_exactly(
    service: Bulkio, datadir: Path, anonymous: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    path, expected = make(datadir, "users", "csv", ROWS, seed=1201)
    data = path.read_bytes()
    view = open_upload(service, path, data)
    assert view["status"] == "open" and view["storage"] == "local"
    assert (view["size"], view["received_bytes"], view["parts"]) == (len(data), 0, [])
    url = view["data_url"]
    assert url.startswith(f"{service.env['BULKIO_PUBLIC_URL']}/v1/uploads/{view['upload_id']}/")

    half = len(data) // 2
    cut_patch(url, 0, data, half)  # the connection breaks after half the body
    offset = settled_offset(url)
    assert offset == half  # what arrived before the break is kept, nothing more

    head = anonymous.head(url)
    assert (head.headers["upload-offset"], head.headers["upload-length"]) == (
        str(half),
        str(len(data)),
    )
    served = service.client.get(f"/v1/uploads/{view['upload_id']}").json()
    assert served["received_bytes"] == half and served["received_sha256"] is None

    # Not all bytes yet: completing is refused, the upload stays open.
    early = service.client.post(f"/v1/uploads/{view['upload_id']}/complete")
    assert early.status_code == 409, early.text
    assert early.json()["offset"] == half and early.headers["upload-offset"] == str(half)

    # A wrong offset is a 409 naming the right one; nothing is written.
    wrong = anonymous.patch(url, headers={"Upload-Offset": "0"}, content=data[:10])
    assert wrong.status_code == 409, wrong.text
    assert wrong.json()["offset"] == half and wrong.headers["upload-offset"] == str(half)

    rest = anonymous.patch(url, headers={"Upload-Offset": str(half)}, content=data[half:])
    assert rest.status_code == 204, rest.text
    assert rest.headers["upload-offset"] == str(len(data))

    done = service.client.post(f"/v1/uploads/{view['upload_id']}/complete")
    assert done.status_code == 200, done.text
    completed = done.json()
    assert completed["status"] == "completed" and completed["data_url"] is None
    assert completed["received_sha256"] == completed["sha256"] == sha256_of(data)
    again = service.client.post(f"/v1/uploads/{view['upload_id']}/complete")
    assert again.status_code == 200 and again.json()["status"] == "completed"

    res = import_upload(service, view["upload_id"], resource="users")
    assert res.status_code == 202, res.text
    job = service.wait(res.json()["job_id"])
    check_import(service, job, expected)
    assert job["file_name"] == path.name and job["progress"]["total_bytes"] == len(data)
    assert db.execute("SELECT count(*) FROM users").fetchone() == (expected.successful,)
    imported = service.client.get(f"/v1/uploads/{view['upload_id']}").json()
    assert (imported["status"], imported["job_id"]) == ("imported", job["job_id"])

    twice = import_upload(service, view["upload_id"], resource="users")
    assert twice.status_code == 409, twice.text
    assert "imported already" in twice.json()["detail"]


def test_a_checksum_mismatch_is_refused_and_the_upload_is_unusable(
    service: Bulkio, datadir: Path, anonymous: httpx.Client
) -> None:
    path, _ = make(datadir, "users", "ndjson", 200, seed=1202)
    data = path.read_bytes()
    declared = sha256_of(data + b"\n")
    view = open_upload(service, path, data, sha256=declared.upper())  # either case
    sent = anonymous.patch(view["data_url"], headers={"Upload-Offset": "0"}, content=data)
    assert sent.status_code == 204, sent.text

    res = service.client.post(f"/v1/uploads/{view['upload_id']}/complete")
    assert res.status_code == 422, res.text
    problem = res.json()
    assert problem["declared_sha256"] == declared
    assert problem["received_sha256"] == sha256_of(data)
    assert declared in problem["detail"] and sha256_of(data) in problem["detail"]

    rejected = service.client.get(f"/v1/uploads/{view['upload_id']}").json()
    assert rejected["status"] == "rejected" and sha256_of(data) in rejected["error"]
    objects = Path(service.env["BULKIO_STORAGE_URL"].removeprefix("file://"))
    assert not (objects / "uploads" / view["upload_id"]).exists()  # its bytes are gone
    res = import_upload(service, view["upload_id"], resource="users")
    assert res.status_code == 409 and "rejected" in res.json()["detail"], res.text
    res = service.client.post(f"/v1/uploads/{view['upload_id']}/complete")
    assert res.status_code == 409, res.text


def test_another_owner_gets_404_and_a_data_url_writes_only_its_own_upload(
    service: Bulkio, datadir: Path, anonymous: httpx.Client
) -> None:
    path, _ = make(datadir, "users", "csv", 100, seed=1203)
    data = path.read_bytes()
    mine = open_upload(service, path, data)
    other = open_upload(service, path, data)
    sent = anonymous.patch(mine["data_url"], headers={"Upload-Offset": "0"}, content=data)
    assert sent.status_code == 204, sent.text
    assert service.client.post(f"/v1/uploads/{mine['upload_id']}/complete").status_code == 200

    token = make_token(service.env["BULKIO_DATABASE_URL"], "mallory", ["imports:write"])
    mallory = service.client_for(token)
    upload_id = mine["upload_id"]
    assert mallory.get(f"/v1/uploads/{upload_id}").status_code == 404
    assert mallory.post(f"/v1/uploads/{upload_id}/complete").status_code == 404
    res = mallory.post("/v1/imports", json={"upload_id": upload_id, "resource": "users"})
    assert res.status_code == 404, res.text
    res = mallory.post("/v1/imports", data={"upload_id": upload_id, "resource": "users"},
                       files={"x": ("x", b"")})  # fmt: skip
    assert res.status_code == 404, res.text

    # One upload's signature does not open another's data URL; a tampered one opens nothing.
    stolen = httpx.URL(mine["data_url"]).copy_with(path=f"/v1/uploads/{other['upload_id']}/data")
    res = anonymous.patch(str(stolen), headers={"Upload-Offset": "0"}, content=data)
    assert res.status_code == 403, res.text
    tampered = httpx.URL(other["data_url"]).copy_merge_params({"expires": "9999999999"})
    assert anonymous.head(str(tampered)).status_code == 403
    assert anonymous.head(other["data_url"]).headers["upload-offset"] == "0"


def test_imports_of_an_upload_keep_todays_options_and_idempotency(
    service: Bulkio, datadir: Path, anonymous: httpx.Client
) -> None:
    path, expected = make(datadir, "users", "csv", ROWS, seed=1204)
    data = path.read_bytes()
    view = open_upload(service, path, data)
    anonymous.patch(view["data_url"], headers={"Upload-Offset": "0"}, content=data)
    assert service.client.post(f"/v1/uploads/{view['upload_id']}/complete").status_code == 200

    not_yet = open_upload(service, path, data)
    res = import_upload(service, not_yet["upload_id"], resource="users")
    assert res.status_code == 409 and "complete it first" in res.json()["detail"], res.text

    key = {"Idempotency-Key": "upload-import-1"}
    body = {"upload_id": view["upload_id"], "resource": "users", "mode": "validate_only",
            "max_errors": 1000}  # fmt: skip
    first = service.client.post("/v1/imports", json=body, headers=key)
    assert first.status_code == 202, first.text
    assert first.headers["idempotent-replayed"] == "false"
    replay = service.client.post("/v1/imports", json=body, headers=key)
    assert replay.status_code == 202, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["job_id"] == first.json()["job_id"]
    changed = service.client.post("/v1/imports", json={**body, "mode": "upsert"}, headers=key)
    assert changed.status_code == 422, changed.text

    job = service.wait(first.json()["job_id"])
    assert (job["mode"], job["options"]) == ("validate_only", {"max_errors": 1000})
    assert (job["processed"], job["failed"]) == (expected.total_records, expected.failed)

    # The form variant: upload_id in place of the file.
    other = open_upload(service, path, data)
    anonymous.patch(other["data_url"], headers={"Upload-Offset": "0"}, content=data)
    assert service.client.post(f"/v1/uploads/{other['upload_id']}/complete").status_code == 200
    res = service.client.post(
        "/v1/imports",
        data={"upload_id": other["upload_id"], "resource": "users", "format": "csv"},
        files={"unused": ("x", b"")},  # httpx sends multipart/form-data only with a file part
    )
    assert res.status_code == 202, res.text
    check_import(service, service.wait(res.json()["job_id"]), expected)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"upload_id": "x", "resource": "users", "file": "a"}, 400, "unknown members 'file'"),
        ({"resource": "users"}, 400, "names its 'upload_id'"),
        ({"upload_id": 3, "resource": "users"}, 404, "no upload 3"),
        ({"upload_id": "7c4a8d09-ca37-4bd1-9e63-5e0b6b0a1f29", "resource": "users"}, 404, ""),
        ([1, 2], 400, "must be an object"),
    ],
)
def test_bad_json_import_requests(service: Bulkio, body: Any, status: int, words: str) -> None:
    res = service.client.post("/v1/imports", json=body)
    assert res.status_code == status, res.text
    assert words in res.json()["detail"]


def test_sizes_are_capped_by_the_declared_size_and_the_setting(
    service: Bulkio, anonymous: httpx.Client
) -> None:
    too_big = service.client.post("/v1/uploads", json={"file_name": "a.csv", "size": 2**40})
    assert too_big.status_code == 413 and "BULKIO_MAX_UPLOAD_BYTES" in too_big.json()["detail"]
    res = service.client.post("/v1/uploads", json={"file_name": "a.csv", "size": 10})
    url = res.json()["data_url"]
    over = anonymous.patch(url, headers={"Upload-Offset": "4"}, content=b"x" * 7)
    assert over.status_code == 413, over.text  # announced: refused before a byte is read

    def chunked() -> Any:
        yield b"0123456"
        yield b"789abc"

    res = anonymous.patch(url, headers={"Upload-Offset": "0"}, content=chunked())
    assert res.status_code == 413, res.text  # not announced: cut at the declared size
    assert anonymous.head(url).headers["upload-offset"] == "10"


def test_expiry_removes_an_abandoned_upload_and_its_partial_file(
    service: Bulkio, datadir: Path, anonymous: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    path, _ = make(datadir, "users", "csv", 100, seed=1205)
    data = path.read_bytes()
    view = open_upload(service, path, data)
    anonymous.patch(view["data_url"], headers={"Upload-Offset": "0"}, content=data[:100])
    kept = open_upload(service, path, data)
    objects = Path(service.env["BULKIO_STORAGE_URL"].removeprefix("file://"))
    partial = objects / "uploads" / view["upload_id"] / "data"
    assert partial.stat().st_size == 100
    expires = datetime.fromisoformat(view["expires"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)

    storage = open_storage(Settings(storage_url=service.env["BULKIO_STORAGE_URL"]))
    assert cleanup(db, storage, timedelta(days=7)).uploads == 0  # not expired yet
    assert partial.exists()
    db.execute(
        "UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = %s",
        (view["upload_id"],),
    )
    report = cleanup(db, storage, timedelta(days=7))
    assert report.uploads == 1
    assert not partial.parent.exists()
    assert service.client.get(f"/v1/uploads/{view['upload_id']}").status_code == 404
    assert anonymous.head(view["data_url"]).status_code == 404
    assert service.client.get(f"/v1/uploads/{kept['upload_id']}").status_code == 200


def test_retention_deletes_an_imported_upload_with_its_job(
    service: Bulkio, datadir: Path, anonymous: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    path, _ = make(datadir, "users", "csv", 100, seed=1206)
    data = path.read_bytes()
    view = open_upload(service, path, data)
    anonymous.patch(view["data_url"], headers={"Upload-Offset": "0"}, content=data)
    assert service.client.post(f"/v1/uploads/{view['upload_id']}/complete").status_code == 200
    job = service.wait(import_upload(service, view["upload_id"], resource="users").json()["job_id"])
    objects = Path(service.env["BULKIO_STORAGE_URL"].removeprefix("file://"))
    folder = objects / "uploads" / view["upload_id"]
    assert (folder / "data").stat().st_size == len(data)  # the job's source is the upload's file

    db.execute(
        "UPDATE jobs SET finished_at = now() - interval '30 days' WHERE id = %s", (job["job_id"],)
    )
    storage = open_storage(Settings(storage_url=service.env["BULKIO_STORAGE_URL"]))
    report = cleanup(db, storage, timedelta(days=7))
    assert (report.jobs, report.uploads) == (1, 0)
    assert not folder.exists()  # the object with its job, then its empty folder
    assert db.execute("SELECT count(*) FROM uploads").fetchone() == (0,)
    assert service.client.get(f"/v1/uploads/{view['upload_id']}").status_code == 404
