"""The client's display in a real pseudo-terminal (pexpect): the upload and job bars appear and
end at 100 %, the summary table and the first errors follow, and when stdout is redirected to a
file it receives the JSON document and nothing else. NO_COLOR removes the colours; with stderr
redirected there are no bars at all."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.support.cli import BULKIO, client_env, same_job
from tests.support.datafiles import make
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

#: Control sequences (CSI ... letter, OSC ... BEL) between the frames of a live display.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
#: A colour: SGR 30-37, 90-97 or 38;... (foreground) anywhere in an SGR sequence.
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|9[0-7])(?:;[0-9]+)*m")


def in_terminal(env: dict[str, str], command: str, cwd: Path) -> tuple[int, str]:
    """``command`` (a shell line) in a 50x140 pseudo-terminal; its exit code and all it wrote
    to the terminal, raw."""
    child = pexpect.spawn(
        "/bin/sh",
        ["-c", command],
        env={**env, "TERM": "xterm-256color"},
        cwd=str(cwd),
        dimensions=(50, 140),
        encoding="utf-8",
        codec_errors="replace",
        timeout=180,
    )
    child.expect(pexpect.EOF)
    raw = child.before
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return child.exitstatus, raw


def screen_lines(raw: str) -> list[str]:
    """The lines as text: control sequences dropped, carriage-return rewrites kept apart."""
    text = CONTROL.sub("", raw)
    return [line.rstrip() for chunk in text.split("\n") for line in chunk.split("\r")]


def last_frame(lines: list[str], label: str) -> str:
    frames = [line for line in lines if line.startswith(label)]
    assert frames, f"no {label!r} bar in:\n" + "\n".join(lines)
    return frames[-1]


@pytest.fixture
def env(service: Bulkio, tmp_path: Path) -> dict[str, str]:
    return client_env(service, tmp_path / "config")


def test_import_shows_both_bars_to_100_percent_and_stdout_gets_only_the_json(
    service: Bulkio, env: dict[str, str], datadir: Path, tmp_path: Path
) -> None:
    path, expected = make(datadir, "users", "csv", 3000, seed=51)
    out = tmp_path / "job.json"
    command = f"{BULKIO} import {shlex.quote(str(path))} -r users > {shlex.quote(str(out))}"
    code, raw = in_terminal(env, command, tmp_path)
    assert code == 0, raw
    lines = screen_lines(raw)
    upload = last_frame(lines, "upload")
    assert re.search(r"━+ 100% ", upload), upload
    size = path.stat().st_size / 1000
    assert f"{size:.1f}/{size:.1f} kB" in upload
    done = last_frame(lines, "completed")
    assert re.search(r"━+ 100% 3,000 records · \d[\d,]* rejected", done), done
    assert f"· {expected.failed:,} rejected" in done
    # The bars move: earlier frames of the job bar were not at 100 %.
    assert any(line.startswith(("queued", "import")) for line in lines)
    text = "\n".join(lines)
    assert "│ Status   │ completed" in text
    assert f"{expected.failed:,} records, {expected.failed:,} errors" in text
    assert "code" in text and "message" in text  # the first errors' table
    job = json.loads(out.read_text())  # the file holds exactly one JSON document
    same_job(job, service.client.get(f"/v1/jobs/{job['job_id']}").json())
    assert f"bulkio jobs errors {job['job_id']} -o errors-{job['job_id'][:8]}.csv" in text.replace(
        "\n", ""
    )
    assert "{" not in text  # no JSON on the terminal: stdout went to the file


def test_colours_unless_no_color(
    service: Bulkio, env: dict[str, str], datadir: Path, tmp_path: Path
) -> None:
    path, _ = make(datadir, "users", "csv", 1000, seed=52)
    command = f"{BULKIO} import {shlex.quote(str(path))} -r users > /dev/null"
    code, coloured = in_terminal(env, command, tmp_path)
    assert code == 0 and COLOUR.search(coloured)
    code, plain = in_terminal({**env, "NO_COLOR": "1"}, command, tmp_path)
    assert code == 0 and not COLOUR.search(plain), COLOUR.findall(plain)[:5]
    assert re.search(r"━+ 100% ", last_frame(screen_lines(plain), "completed"))


def test_export_and_error_report_bars_end_at_100_percent(
    service: Bulkio, env: dict[str, str], datadir: Path, tmp_path: Path
) -> None:
    path, _ = make(datadir, "users", "csv", 3000, seed=53)
    job: dict[str, Any] = service.import_file(path, "users")
    code, raw = in_terminal(env, f"{BULKIO} export users -o users.csv", tmp_path)
    assert code == 0, raw
    exported = (tmp_path / "users.csv").stat().st_size / 1000
    streamed = last_frame(screen_lines(raw), "export")
    assert re.search(rf"━+ 100% {exported:.1f}/{exported:.1f} kB", streamed), streamed
    code, raw = in_terminal(
        env,
        f"{BULKIO} export users -o u.ndjson --async && "
        f"{BULKIO} jobs errors {job['job_id']} -o errors.csv",
        tmp_path,
    )
    assert code == 0, raw
    lines = screen_lines(raw)
    assert re.search(r"━+ 100% [\d,]+ rows", last_frame(lines, "completed"))
    assert re.search(r"━+ 100% ", last_frame(lines, "download"))
    assert re.search(r"━+ 100% ", last_frame(lines, "errors"))
    assert (tmp_path / "errors.csv").read_bytes() == service.error_report(
        job["job_id"], "csv"
    ).content


def test_with_stderr_redirected_there_are_no_bars_and_no_json_on_a_terminal_stdout(
    service: Bulkio, env: dict[str, str], datadir: Path, tmp_path: Path
) -> None:
    path, _ = make(datadir, "users", "csv", 1000, seed=54)
    err = tmp_path / "err.txt"
    code, raw = in_terminal(
        env,
        f"{BULKIO} import {shlex.quote(str(path))} -r users 2> {shlex.quote(str(err))}",
        tmp_path,
    )
    assert code == 0
    assert raw.strip() == ""  # stdout is the terminal: no JSON (no --json), no bars
    log = err.read_text()
    assert "━" not in log and "\x1b" not in log
    assert re.search(r"job \S+ completed: 1,000 records", log), log


def test_login_asks_for_what_is_missing_and_hides_the_token(
    service: Bulkio, tmp_path: Path
) -> None:
    home = tmp_path / "config"
    url = f"http://127.0.0.1:{service.port}"
    child = pexpect.spawn(
        BULKIO,
        ["login", "--profile", "work"],
        env={**client_env(None, home), "TERM": "xterm-256color"},
        encoding="utf-8",
        timeout=60,
    )
    child.expect("Server URL")
    child.sendline(url)
    child.expect("API token")
    child.sendline(service.token)
    child.expect(pexpect.EOF)
    shown = child.before
    child.close()
    assert child.exitstatus == 0, shown
    assert service.token not in shown  # typed without echo
    assert "saved profile 'work'" in shown
    saved = (home / "bulkio" / "config.toml").read_text()
    assert f'url = "{url}"' in saved and f'token = "{service.token}"' in saved


def test_ctrl_c_stops_watching_and_says_how_to_resume(
    service: Bulkio, env: dict[str, str], datadir: Path
) -> None:
    for worker in service.workers:  # the job stays queued; the fixture restarts a worker
        worker.stop()
    path, _ = make(datadir, "users", "csv", 1000, seed=55)
    res = service.upload(path, "users")
    assert res.status_code == 202, res.text
    job_id = res.json()["job_id"]
    child = pexpect.spawn(
        BULKIO,
        ["jobs", "watch", job_id],
        env={**env, "TERM": "xterm-256color"},
        dimensions=(50, 140),
        encoding="utf-8",
        timeout=60,
    )
    child.expect("queued")
    child.sendintr()
    child.expect(pexpect.EOF)
    shown = CONTROL.sub("", child.before)
    child.close()
    assert child.exitstatus == 130, shown
    assert f"stopped watching; job {job_id} goes on. Resume with: bulkio jobs watch {job_id}" in (
        shown.replace("\r\n", "")
    )
    assert service.client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
