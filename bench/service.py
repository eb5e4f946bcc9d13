"""A running bulkio for the benchmarks: granian serving the API plus worker processes that the
benchmarks replace between runs (a fresh worker per measured import, so its peak RSS belongs to
that import alone).

Processes are ``tests/support/processes.py``'s ``Proc``; what differs from the tests' service
(``tests/support/service.py``) is that
uploads stream a file object (1M-row files never enter this process's memory), that the worker
set can be replaced, and that the client token is exempt from the per-token rate limit (the
benchmark polls job status).
"""

from __future__ import annotations

import concurrent.futures
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from inputs import DataFile

from tests.support.processes import Proc
from tests.support.servers import free_port
from tests.support.waits import wait_until

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"completed", "failed", "cancelled"}
#: Client-side polling interval of job status (bounds the error of an end-to-end time).
POLL_SECONDS = 0.1
READY_MARK = "worker ready"
IMPORT_MARK = '"msg": "import started"'


def api_token(database_url: str) -> str | None:
    """An admin API token with no practical rate limit, made the way `bulkio token create`
    does; None when this bulkio has no token authentication."""
    try:
        from engine import auth
    except ImportError:
        return None
    with psycopg.connect(database_url, autocommit=True) as conn:
        _, token = auth.create_token(conn, "bench", ["admin"], "bench",
                                     requests_per_minute=1_000_000)  # fmt: skip
    return str(token)


def proc_status(pid: int) -> dict[str, int]:
    """``VmHWM`` / ``VmRSS`` / ``Threads`` of a process (kB for memory), from /proc."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found.extend(int(c) for c in children)
    return found


@dataclass(frozen=True)
class WorkerMemory:
    """A worker's ``VmHWM`` (peak RSS), its RSS when fresh and ready, and its RSS now."""

    peak_mib: float
    idle_mib: float
    after_mib: float
    threads: int
    child_processes: int

    def extra(self) -> dict[str, float]:
        """Everything but the peak, for a measurement's extra fields."""
        return {
            "idle_rss_mib": round(self.idle_mib, 1),
            "rss_after_mib": round(self.after_mib, 1),
            "threads": self.threads,
            "child_processes": self.child_processes,
        }


class BenchService:
    """API + a replaceable set of worker processes sharing one environment."""

    def __init__(self, env: Mapping[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.env = {
            **env,
            "BULKIO_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "PYTHONUNBUFFERED": "1",
        }
        self.workers: list[Proc] = []
        self.last_upload_seconds = 0.0
        self._idle_kb: list[int] = []
        self._spawned = 0
        bindir = Path(sys.executable).parent
        argv = [str(bindir / "granian"), "--interface", "asgi", "--host", "127.0.0.1",
                "--port", str(self.port), "--no-access-log",
                "--factory", "api.app:create_app"]  # fmt: skip
        self.api = Proc(argv, self.env, workdir / "api.log")
        token = api_token(self.env["BULKIO_DATABASE_URL"])
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=httpx.Timeout(120, connect=10),
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        self._wait_api()

    def _wait_api(self) -> None:
        def answers() -> bool:
            if not self.api.alive():
                raise RuntimeError(f"the API did not start:\n{self.api.tail()}")
            try:
                return self.client.get("/health", timeout=2).status_code < 500
            except httpx.HTTPError:
                return False

        wait_until(answers, 60, 0.1, lambda: f"the API to answer\n{self.api.tail()}")

    # ------------------------------------------------------------------------------- workers

    def set_workers(self, count: int) -> list[Proc]:
        """Stop every worker, start ``count`` fresh ones and wait until they serve the queue."""
        for worker in self.workers:
            worker.stop(timeout=60)
        self.workers = []
        for _ in range(count):
            self._spawned += 1
            log = self.workdir / f"worker-{self._spawned}.log"
            argv = [sys.executable, "-m", "engine.cli", "worker"]
            self.workers.append(Proc(argv, self.env, log))
        self._idle_kb = []
        for worker in self.workers:

            def ready(worker: Proc = worker) -> bool:
                if not worker.alive():
                    raise RuntimeError(f"a worker did not start:\n{worker.tail()}")
                return READY_MARK in worker.log.read_text(errors="replace")

            wait_until(ready, 60, 0.05, lambda w=worker: f"a worker to start:\n{w.tail()}")
            self._idle_kb.append(proc_status(worker.pid)["VmRSS"])
        return self.workers

    def worker_memory(self) -> list[WorkerMemory]:
        """Memory of every live worker (read while it is still alive: VmHWM dies with it)."""
        out = []
        for worker, idle_kb in zip(self.workers, self._idle_kb, strict=True):
            status = proc_status(worker.pid)
            out.append(WorkerMemory(
                peak_mib=status["VmHWM"] / 1024, idle_mib=idle_kb / 1024,
                after_mib=status["VmRSS"] / 1024, threads=status["Threads"],
                child_processes=len(child_pids(worker.pid)),
            ))  # fmt: skip
        return out

    def imports_started(self) -> list[int]:
        """How many imports each live worker has started (from its log): who did the work."""
        return [w.log.read_text(errors="replace").count(IMPORT_MARK) for w in self.workers]

    # ---------------------------------------------------------------------------------- jobs

    def upload(self, data: DataFile) -> str:
        """POST the file as multipart/form-data, streamed from disk; returns the job id. The
        seconds until the 202 are kept in ``last_upload_seconds``."""
        started = time.perf_counter()
        with open(data.path, "rb") as fh:
            res = self.client.post(
                "/v1/imports",
                data={
                    "resource": data.resource,
                    "format": "csv" if data.format == "plain" else data.format,
                },
                files={"file": (data.path.name, fh, data.media_type)},
            )
        if res.status_code != 202:
            raise AssertionError(f"upload of {data.path.name}: {res.status_code} {res.text}")
        self.last_upload_seconds = time.perf_counter() - started
        return str(res.json()["job_id"])

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def finished() -> dict[str, Any] | None:
            last.clear()
            last.update(self.client.get(f"/v1/jobs/{job_id}").json())
            if last.get("status") in TERMINAL:
                return dict(last)
            if self.workers and not any(w.alive() for w in self.workers):
                raise AssertionError(f"every worker died; job {job_id}: {last}\n{self.logs()}")
            return None

        return wait_until(
            finished, timeout, POLL_SECONDS, lambda: f"job {job_id}: {last}\n{self.logs()}"
        )

    def import_file(self, data: DataFile, timeout: float = 3600) -> dict[str, Any]:
        """Upload, then poll until the job is terminal (the end-to-end import)."""
        return self.wait(self.upload(data), timeout)

    def import_files(self, files: list[DataFile], timeout: float = 3600) -> list[dict[str, Any]]:
        """Several files at once: concurrent uploads, each then waited for."""
        with concurrent.futures.ThreadPoolExecutor(len(files)) as pool:
            return list(pool.map(lambda f: self.import_file(f, timeout), files))

    def error_report(self, job_id: str) -> bytes:
        res = self.client.get(f"/v1/imports/{job_id}/errors", params={"format": "ndjson"})
        if res.status_code != 200:
            raise AssertionError(f"error report of {job_id}: {res.status_code} {res.text}")
        return res.content

    def has_route(self, method: str, path: str) -> bool:
        """Does the API's OpenAPI document declare ``method path``?"""
        res = self.client.get("/schema/openapi.json")
        res.raise_for_status()
        paths: dict[str, Any] = res.json().get("paths", {})
        return method.lower() in paths.get(path, paths.get(path + "/", {}))

    def export_to(self, out: Path, params: Mapping[str, str]) -> tuple[int, int]:
        """GET /v1/exports streamed into ``out`` (uncompressed); (HTTP status, bytes written)."""
        written = 0
        headers = {"Accept-Encoding": "identity"}
        with self.client.stream("GET", "/v1/exports", params=dict(params), headers=headers) as res:
            if res.status_code != 200:
                res.read()
                return res.status_code, 0
            encoding = res.headers.get("content-encoding", "identity")
            assert encoding == "identity", f"asked for an uncompressed body, got {encoding}"
            with open(out, "wb") as fh:
                for chunk in res.iter_raw(1 << 20):
                    fh.write(chunk)
                    written += len(chunk)
        return 200, written

    # ------------------------------------------------------------------------------ teardown

    def logs(self, lines: int = 40) -> str:
        parts = [f"--- api\n{self.api.tail(lines)}"]
        parts += [f"--- {w.log.name}\n{w.tail(lines)}" for w in self.workers]
        return "\n".join(parts)

    def stop(self) -> None:
        self.client.close()
        for worker in self.workers:
            worker.stop(timeout=60)
        self.api.stop()
