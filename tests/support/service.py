"""A running bulkio for the tests: granian serving the API plus real worker processes, against
the throwaway PostgreSQL/Redis/S3 servers of ``tests/support/servers.py``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg

from engine.auth import create_token
from tests.support.processes import ROOT, Proc
from tests.support.servers import free_port
from tests.support.waits import wait_until

__all__ = ["ROOT", "TERMINAL", "TEST_ENV", "Bulkio", "make_token"]

TERMINAL = {"completed", "failed", "cancelled"}

#: Settings of a test service: small batches so the 10k-row files of the tests span many
#: batches (and checkpoints), and short leases and reconciler rounds so recoveries are quick.
TEST_ENV = {
    "BULKIO_BATCH_ROWS": "1000",
    "BULKIO_LEASE_SECONDS": "5",
    "BULKIO_RECONCILE_SECONDS": "1",
    "BULKIO_REQUEUE_AFTER_SECONDS": "3",
    "BULKIO_SIGNING_SECRET": "test-secret",
    "BULKIO_LOG_LEVEL": "INFO",
}


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
        argv = [str(bindir / "granian"), "--interface", "asgi", "--host", "127.0.0.1",
                "--port", str(self.port), "--no-access-log",
                "--factory", "api.app:create_app"]  # fmt: skip
        api = self.api = Proc(argv, self.env, self.workdir / "api.log")

        def answers() -> bool:
            if not api.alive():
                raise RuntimeError(f"API did not start:\n{api.tail()}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
            except httpx.HTTPError:
                return False
            return True  # any answer: it serves

        wait_until(answers, 30, 0.1, lambda: f"the API to answer\n{api.tail()}")

    def start_worker(self) -> Proc:
        n = len(self.workers)
        proc = Proc(
            [sys.executable, "-m", "engine.cli", "worker"],
            self.env,
            self.workdir / f"worker-{n}.log",
        )
        self.workers.append(proc)
        return proc

    def revive_workers(self) -> None:
        """Forget dead workers and start one if none is left (a test may kill them all)."""
        for dead in [w for w in self.workers if not w.alive()]:
            dead.stop()
            self.workers.remove(dead)
        if not self.workers:
            self.start_worker()

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
        """The job's view once it is terminal (completed, failed or cancelled)."""
        last: dict[str, Any] = {}

        def finished() -> dict[str, Any] | None:
            last.clear()
            last.update(self.client.get(f"/v1/{kind}/{job_id}").json())
            return dict(last) if last.get("status") in TERMINAL else None

        return wait_until(
            finished, timeout, 0.2, lambda: f"job {job_id} to finish: {last}\n{self.logs()}"
        )

    def import_file(self, path: Path, resource: str, **kw: Any) -> dict[str, Any]:
        res = self.upload(path, resource, **kw)
        assert res.status_code == 202, res.text
        return self.wait(res.json()["job_id"])

    def import_bytes(
        self, data: bytes, filename: str, resource: str = "users", timeout: float = 60
    ) -> dict[str, Any]:
        """Upload ``data`` as a file called ``filename``; the job once terminal."""
        res = self.upload(None, resource, data=data, filename=filename)
        assert res.status_code == 202, res.text
        return self.wait(res.json()["job_id"], timeout=timeout)

    def error_report(self, job_id: str, fmt: str = "ndjson") -> httpx.Response:
        return self.client.get(f"/v1/imports/{job_id}/errors", params={"format": fmt})

    def errors(self, job_id: str) -> list[dict[str, Any]]:
        """The job's error rows, from its NDJSON report."""
        res = self.error_report(job_id)
        assert res.status_code == 200, res.text
        return [json.loads(line) for line in res.text.splitlines() if line]
