"""A running bulkio for integration tests: granian serving the API plus real worker processes,
against the throwaway PostgreSQL/Redis/S3 servers of ``tests/servers.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg
from servers import free_port

from engine.auth import create_token

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "failed", "cancelled"}


class Proc:
    def __init__(self, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=ROOT,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20) -> None:
        if self._fh.closed:
            return
        if self.alive():
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                self.proc.wait()
        self._fh.close()

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def make_token(database_url: str, owner: str, scopes: list[str], **limits: Any) -> str:
    """A real API token, created the way `bulkio token create` does."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return create_token(conn, owner, scopes, **limits)[1]


class Bulkio:
    """API + workers with one environment. ``client`` is an httpx client on the API."""

    def __init__(self, env: Mapping[str, str], workdir: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            **env,
            "BULKIO_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "PYTHONUNBUFFERED": "1",
        }
        self.workdir = workdir
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self.start_api()
        for _ in range(workers):
            self.start_worker()
        self.token = make_token(self.env["BULKIO_DATABASE_URL"], "tester", ["admin"])
        self._clients: list[httpx.Client] = []
        self.client = self.client_for(self.token)
        self._clients.clear()

    def client_for(self, token: str | None) -> httpx.Client:
        """A client with ``token`` (None: no token); closed by :meth:`close_clients`."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60, headers=headers)
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    def start_api(self) -> None:
        bindir = Path(sys.executable).parent
        self.api = Proc(
            [
                str(bindir / "granian"),
                "--interface",
                "asgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--factory",
                "api.app:create_app",
            ],
            self.env,
            self.workdir / "api.log",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code < 600:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
            if not self.api.alive():
                break
        raise RuntimeError(f"API did not start:\n{self.api.tail()}")

    def start_worker(self) -> Proc:
        n = len(self.workers)
        proc = Proc(
            [sys.executable, "-m", "engine.cli", "worker"],
            self.env,
            self.workdir / f"worker-{n}.log",
        )
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        self.close_clients()
        self.client.close()
        for w in self.workers:
            w.stop()
        if self.api:
            self.api.stop()

    def logs(self) -> str:
        parts = [f"--- api\n{self.api.tail() if self.api else ''}"]
        parts += [f"--- worker {i}\n{w.tail()}" for i, w in enumerate(self.workers)]
        return "\n".join(parts)

    # ------------------------------------------------------------ API helpers

    def upload(
        self,
        path: Path | None,
        resource: str,
        *,
        fmt: str | None = None,
        mode: str | None = None,
        key: str | None = None,
        data: bytes | None = None,
        filename: str | None = None,
    ) -> httpx.Response:
        content = data if data is not None else Path(path).read_bytes()  # type: ignore[arg-type]
        form: dict[str, Any] = {"resource": resource}
        if fmt:
            form["format"] = fmt
        if mode:
            form["mode"] = mode
        headers = {"Idempotency-Key": key} if key else {}
        name = filename or (Path(path).name if path else "upload.bin")
        return self.client.post(
            "/v1/imports", data=form, files={"file": (name, content)}, headers=headers
        )

    def wait(self, job_id: str, timeout: float = 120, kind: str = "jobs") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.client.get(f"/v1/{kind}/{job_id}").json()
            if body.get("status") in TERMINAL:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not finished: {body}\n{self.logs()}")
            time.sleep(0.2)

    def import_file(self, path: Path, resource: str, **kw: Any) -> dict[str, Any]:
        res = self.upload(path, resource, **kw)
        assert res.status_code == 202, res.text
        return self.wait(res.json()["job_id"])

    def error_report(self, job_id: str, fmt: str = "ndjson") -> httpx.Response:
        return self.client.get(f"/v1/imports/{job_id}/errors", params={"format": fmt})
