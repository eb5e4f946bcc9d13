"""``bulkio import`` through an upload session (the local store here; S3 in test_uploads_s3.py):
above --direct-threshold, or with --direct; resumed by the client itself after the network
broke in the middle of the bytes (a real cut: the request's connection dies after part of its
body went out, through a transport wrapped around httpx's own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cli import client_env, document, run
from tests.support.datafiles import make
from tests.support.service import Bulkio
from tests.support.uploads import CutOnce, check_import, in_process

pytestmark = pytest.mark.integration


def upload_of(db: psycopg.Connection[Any], job_id: str) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT status, storage, size FROM uploads WHERE job_id = %s", (job_id,)
    ).fetchone()


def test_files_above_the_threshold_go_through_an_upload_session(
    service: Bulkio, datadir: Path, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    path, expected = make(datadir, "users", "csv", 3000, seed=1401)
    env = client_env(service, tmp_path / "config")
    done = run(env, "import", str(path), "-r", "users", "--direct-threshold", "64K")
    assert done.returncode == 0, done.stderr
    job = document(done)
    check_import(service, job, expected)
    assert upload_of(db, job["job_id"]) == ("imported", "local", path.stat().st_size)

    small = run(env, "import", str(path), "-r", "users", "--mode", "validate_only")
    assert small.returncode == 0, small.stderr  # 64 MiB by default: the plain upload
    assert upload_of(db, document(small)["job_id"]) is None

    bad = run(env, "import", str(path), "-r", "users", "--direct-threshold", "lots")
    assert bad.returncode == 1 and "--direct-threshold: 'lots' is not a size" in bad.stderr


def test_the_client_resumes_a_local_upload_after_the_network_broke(
    service: Bulkio, datadir: Path, db: psycopg.Connection[Any]
) -> None:
    path, expected = make(datadir, "users", "ndjson", 20_000, seed=1402)
    size = path.stat().st_size
    transport = CutOnce("PATCH", "/data", after=size // 3)
    code, job, err = in_process(service, transport, "import", str(path), "-r", "users", "--direct")
    assert code == 0, err
    assert transport.cut and "the network broke" in err and "trying again" in err
    offsets = [int(h["upload-offset"]) for m, _, h in transport.seen if m == "PATCH"]
    # The first PATCH from 0 broke; the next ones went on from what had arrived (the server may
    # still hold the broken request's lock for a moment: 409, then again).
    assert offsets[0] == 0 and len(offsets) >= 2
    assert set(offsets[1:]) == {size // 3}  # what went out before the cut was not sent again
    check_import(service, job, expected)
    assert upload_of(db, job["job_id"]) == ("imported", "local", size)
    imports = [u for m, u, _ in transport.seen if m == "POST" and u.endswith("/v1/imports")]
    assert len(imports) == 1
