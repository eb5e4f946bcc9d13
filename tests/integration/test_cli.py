"""The ``bulkio`` command-line client end to end: the console script in a subprocess against the
real service (API + worker), stdout and stderr piped, so stdout holds one JSON document.

Imports with defects (exit 0, and 5 with --strict), exports equal to a direct query, the job
list, show, watch, cancel (2), the error report, --timeout (3), refused tokens (4), missing
files and unreachable servers (1), and login profiles."""

from __future__ import annotations

import csv
import gzip
import io
import json
import stat
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cli import client_env, document, run, same_job
from tests.support.datafiles import make
from tests.support.servers import free_port
from tests.support.service import Bulkio, make_token

pytestmark = pytest.mark.integration


@pytest.fixture
def env(service: Bulkio, tmp_path: Path) -> dict[str, str]:
    return client_env(service, tmp_path / "config")


def served(service: Bulkio, job_id: str) -> dict[str, Any]:
    res = service.client.get(f"/v1/jobs/{job_id}")
    assert res.status_code == 200, res.text
    return res.json()  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- import


def test_an_import_with_defects_prints_its_job_and_exits_0(
    service: Bulkio, env: dict[str, str], datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 3000, seed=41)
    done = run(env, "import", str(path), "--resource", "users")
    assert done.returncode == 0, done.stderr
    job = document(done)
    assert job["status"] == "completed"
    assert (job["processed"], job["successful"], job["failed"]) == (
        expected.total_records,
        expected.successful,
        expected.failed,
    )
    assert expected.failed > 0
    same_job(job, served(service, job["job_id"]))
    # stderr is no terminal: no bars, no tables; the summary line and the report's command.
    assert "━" not in done.stderr
    assert f"job {job['job_id']} completed: 3,000 records" in done.stderr
    assert f"bulkio jobs errors {job['job_id']} -o errors-{job['job_id'][:8]}.csv" in done.stderr


def test_strict_exits_5_when_records_were_rejected_and_0_when_none_were(
    service: Bulkio, env: dict[str, str], datadir: Path
) -> None:
    dirty, _ = make(datadir, "users", "csv", 1000, seed=42)
    done = run(env, "import", str(dirty), "-r", "users", "--mode", "validate_only", "--strict")
    assert done.returncode == 5, done.stderr
    job = document(done)
    assert job["mode"] == "validate_only" and job["failed"] > 0
    assert "records were rejected (--strict)" in done.stderr
    clean, _ = make(datadir, "users", "ndjson", 500, seed=43, defect_rate=0.0)
    done = run(env, "import", str(clean), "-r", "users", "--strict", "--json")
    assert done.returncode == 0, done.stderr
    assert document(done)["failed"] == 0


def test_no_wait_prints_the_new_job_and_the_command_that_follows_it(
    service: Bulkio, env: dict[str, str], datadir: Path
) -> None:
    path, _ = make(datadir, "users", "csv", 1000, seed=44)
    done = run(env, "import", str(path), "-r", "users", "--no-wait", "--idempotency-key", "k-1")
    assert done.returncode == 0, done.stderr
    job = document(done)
    assert job["status"] in ("queued", "running", "completed")
    assert f"bulkio jobs watch {job['job_id']}" in done.stderr
    service.wait(job["job_id"])
    again = run(env, "import", str(path), "-r", "users", "--no-wait", "--idempotency-key", "k-1")
    assert again.returncode == 0, again.stderr
    replay = document(again)
    assert replay["job_id"] == job["job_id"] and replay["replayed"] is True
    assert "Idempotency-Key 'k-1' was used before" in again.stderr


# ---------------------------------------------------------------------------- export


def _seed_users(db: psycopg.Connection[Any], n: int) -> None:
    db.execute(
        """INSERT INTO users (id, email, name, role, active, created_at)
           SELECT md5('u' || g)::uuid, 'u' || g || '@example.com', 'User ' || g,
                  (ARRAY['admin', 'author', 'reader'])[1 + g %% 3], true,
                  '2024-01-01Z'::timestamptz + g * interval '1 minute'
           FROM generate_series(1, %s) g""",
        (n,),
    )


def test_export_writes_what_a_direct_query_returns(
    service: Bulkio, env: dict[str, str], db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    _seed_users(db, 5000)
    want = [
        [str(r[0]), r[1]]
        for r in db.execute("SELECT id, email FROM users WHERE role = 'admin' ORDER BY id")
    ]
    assert 1000 < len(want) < 5000

    out = tmp_path / "admins.csv"
    args = ["--filter", "role=admin", "--fields", "id,email"]
    done = run(env, "export", "users", "-o", str(out), *args)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["id", "email"] and rows[1:] == want
    assert document(done) == {
        "resource": "users",
        "format": "csv",
        "compression": None,
        "fields": ["id", "email"],
        "filters": {"role": "admin"},
        "file": str(out),
        "bytes": out.stat().st_size,
    }
    assert not list(tmp_path.glob(".*.part"))  # written beside, then renamed

    gz = tmp_path / "admins.ndjson.gz"
    done = run(env, "export", "users", "-o", str(gz), *args)
    assert done.returncode == 0, done.stderr
    lines = gzip.decompress(gz.read_bytes()).decode().splitlines()
    assert [[r["id"], r["email"]] for r in map(json.loads, lines)] == want

    job_out = tmp_path / "admins.json"
    done = run(env, "export", "users", "-o", str(job_out), *args, "--async")
    assert done.returncode == 0, done.stderr
    assert [[r["id"], r["email"]] for r in json.loads(job_out.read_text())] == want
    job = document(done)
    assert job["kind"] == "export" and job["status"] == "completed"
    assert job["processed"] == len(want) and job["result_bytes"] == job_out.stat().st_size


def test_a_bad_export_request_is_the_apis_detail_and_leaves_no_file(
    service: Bulkio, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "x.csv"
    done = run(env, "export", "users", "-o", str(out), "--filter", "colour=red")
    assert done.returncode == 1
    assert "error: " in done.stderr and "colour" in done.stderr
    assert done.stdout == ""
    assert not out.exists() and not list(tmp_path.glob(".*"))
    done = run(env, "export", "users", "-o", str(out), "--filter", "no-equals-sign")
    assert done.returncode == 1 and "expected NAME=VALUE" in done.stderr


# ---------------------------------------------------------------------------- jobs


def test_jobs_list_and_show(
    service: Bulkio, env: dict[str, str], datadir: Path, tmp_path: Path
) -> None:
    path, _ = make(datadir, "users", "csv", 1000, seed=45)
    first = service.import_file(path, "users")
    second = service.import_file(path, "users", mode="validate_only")
    done = run(env, "jobs", "list")
    assert done.returncode == 0, done.stderr
    listed = document(done)
    assert [j["job_id"] for j in listed["jobs"]] == [second["job_id"], first["job_id"]]
    assert listed["next_cursor"] is None

    done = run(env, "jobs", "list", "--limit", "1", "--kind", "import", "--status", "completed")
    page = document(done)
    assert [j["job_id"] for j in page["jobs"]] == [second["job_id"]]
    assert page["next_cursor"]
    done = run(env, "jobs", "list", "--limit", "5", "--cursor", page["next_cursor"])
    assert [j["job_id"] for j in document(done)["jobs"]] == [first["job_id"]]
    assert document(run(env, "jobs", "list", "--status", "failed"))["jobs"] == []

    done = run(env, "jobs", "show", first["job_id"])
    assert done.returncode == 0, done.stderr
    same_job(document(done), served(service, first["job_id"]))

    done = run(env, "jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert done.returncode == 1 and done.stdout == ""
    assert "error: no job 00000000-0000-0000-0000-000000000000" in done.stderr


def test_watch_of_a_finished_job_exits_by_its_outcome(
    service: Bulkio, env: dict[str, str], datadir: Path
) -> None:
    path, _ = make(datadir, "users", "csv", 1000, seed=46)
    job = service.import_file(path, "users")
    done = run(env, "jobs", "watch", job["job_id"])
    assert done.returncode == 0, done.stderr
    same_job(document(done), served(service, job["job_id"]))
    assert run(env, "jobs", "watch", job["job_id"], "--strict").returncode == 5


def test_errors_downloads_the_whole_report(
    service: Bulkio, env: dict[str, str], datadir: Path, tmp_path: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 3000, seed=47)
    job = service.import_file(path, "users")
    for name, fmt in (("e.csv", "csv"), ("e.ndjson", "ndjson"), ("e.json", "json"),
                      ("report.txt", "ndjson")):  # fmt: skip
        out = tmp_path / name
        done = run(env, "jobs", "errors", job["job_id"], "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == service.error_report(job["job_id"], fmt).content
        assert document(done) == {
            "job_id": job["job_id"],
            "format": fmt,
            "file": str(out),
            "bytes": out.stat().st_size,
            "truncated": False,
        }
    out = tmp_path / "forced.csv"
    done = run(env, "jobs", "errors", job["job_id"], "-o", str(out), "--format", "json")
    assert json.loads(out.read_text())[0]["row"] == expected.errors[0][0]


def test_cancel_watch_and_timeout_with_no_worker_running(
    service: Bulkio, env: dict[str, str], datadir: Path
) -> None:
    for worker in service.workers:  # the service fixture starts one again for the next test
        worker.stop()
    path, _ = make(datadir, "users", "csv", 1000, seed=48)

    done = run(env, "import", str(path), "-r", "users", "--timeout", "1.5")
    assert done.returncode == 3, done.stderr
    waiting = document(done)
    assert waiting["status"] == "queued"
    assert f"Resume watching with: bulkio jobs watch {waiting['job_id']}" in done.stderr

    done = run(env, "jobs", "watch", waiting["job_id"], "--timeout", "0.5")
    assert done.returncode == 3 and document(done)["job_id"] == waiting["job_id"]

    done = run(env, "jobs", "cancel", waiting["job_id"])
    assert done.returncode == 0, done.stderr
    assert document(done)["status"] == "cancelled"
    assert f"job {waiting['job_id']} cancelled" in done.stderr

    done = run(env, "jobs", "watch", waiting["job_id"])
    assert done.returncode == 2, done.stderr
    same_job(document(done), served(service, waiting["job_id"]))

    done = run(env, "jobs", "cancel", waiting["job_id"])
    assert done.returncode == 1 and done.stdout == ""
    assert "is already cancelled" in done.stderr


def test_a_failed_job_exits_2(service: Bulkio, env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("email,name\na@example.com,A\n")  # required columns missing: the job fails
    done = run(env, "import", str(bad), "-r", "users")
    assert done.returncode == 2, done.stderr
    job = document(done)
    assert job["status"] == "failed" and job["error"]
    assert job["error"] in done.stderr


# ---------------------------------------------------------------------------- exit codes


def test_refused_tokens_exit_4(
    service: Bulkio, env: dict[str, str], datadir: Path, tmp_path: Path
) -> None:
    path, _ = make(datadir, "users", "csv", 1000, seed=49)
    done = run({**env, "BULKIO_TOKEN": "bk_not-a-token"}, "import", str(path), "-r", "users")
    assert done.returncode == 4 and done.stdout == ""
    assert "check the token" in done.stderr
    reader = make_token(service.env["BULKIO_DATABASE_URL"], "reader", ["exports:read"])
    done = run({**env, "BULKIO_TOKEN": reader}, "import", str(path), "-r", "users")
    assert done.returncode == 4, done.stderr
    assert "imports:write" in done.stderr
    no_token = {k: v for k, v in env.items() if k != "BULKIO_TOKEN"}
    done = run(no_token, "jobs", "list")
    assert done.returncode == 4 and "no API token" in done.stderr


def test_errors_before_any_job_exit_1(
    service: Bulkio, env: dict[str, str], datadir: Path, tmp_path: Path
) -> None:
    done = run(env, "import", str(tmp_path / "missing.csv"), "-r", "users")
    assert (done.returncode, done.stdout) == (1, "")
    assert "missing.csv: no such file" in done.stderr

    path, _ = make(datadir, "users", "csv", 1000, seed=49)
    nowhere = {**env, "BULKIO_URL": f"http://127.0.0.1:{free_port()}"}
    done = run(nowhere, "import", str(path), "-r", "users")
    assert done.returncode == 1 and "cannot connect to http://127.0.0.1:" in done.stderr

    done = run(env, "jobs", "list", "--url", "ftp://example.com")
    assert done.returncode == 1 and "is not an http:// or https:// URL" in done.stderr

    done = run(env, "import", str(path), "-r", "planets")
    assert done.returncode == 1 and "resource must be one of" in done.stderr

    done = run(env, "import", str(path))  # usage: --resource missing
    assert done.returncode == 1 and "Missing option" in done.stderr
    assert service.client.get("/v1/jobs").json()["jobs"] == []


# ---------------------------------------------------------------------------- login


def test_login_writes_a_private_profile_that_later_commands_use(
    service: Bulkio, tmp_path: Path
) -> None:
    home = tmp_path / "config"
    bare = client_env(None, home)
    url = f"http://127.0.0.1:{service.port}"
    done = run(bare, "login", "--profile", "staging", "--url", url, "--token", "-",
               stdin=service.token + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = home / "bulkio" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text())["profiles"]["staging"] == {
        "url": url,
        "token": service.token,
    }
    assert document(done) == {"profile": "staging", "url": url, "config": str(path)}

    assert run(bare, "jobs", "list").returncode == 1  # no 'default' profile, nothing else
    assert run(bare, "jobs", "list", "--profile", "staging").returncode == 0
    assert run({**bare, "BULKIO_PROFILE": "staging"}, "jobs", "list").returncode == 0
    done = run(bare, "jobs", "list", "--profile", "prod")
    assert done.returncode == 1 and "no profile 'prod'" in done.stderr
    # A flag wins over the variable, which wins over the profile.
    wrong = {**bare, "BULKIO_PROFILE": "staging", "BULKIO_TOKEN": "bk_wrong"}
    assert run(wrong, "jobs", "list").returncode == 4
    assert run(wrong, "jobs", "list", "--token", service.token).returncode == 0

    done = run(bare, "login", "--url", url, "--token", "bk_wrong")
    assert done.returncode == 4 and "refused this token" in done.stderr
    assert "default" not in tomllib.loads(path.read_text())["profiles"]
