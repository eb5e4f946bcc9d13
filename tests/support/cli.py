"""Running the ``bulkio`` console script against the test service, as a user's shell would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.service import Bulkio

__all__ = ["BULKIO", "CLIENT_VARIABLES", "client_env", "document", "run", "same_job"]

BULKIO = str(Path(sys.executable).parent / "bulkio")
#: What the client reads of the environment (its own variables are set per run).
CLIENT_VARIABLES = ("BULKIO_URL", "BULKIO_TOKEN", "BULKIO_PROFILE")


def client_env(service: Bulkio | None, config_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a client run: no BULKIO_* variable but BULKIO_URL / BULKIO_TOKEN of
    the service (when given) and ``extra``; a config directory of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKIO_")}
    env["XDG_CONFIG_HOME"] = str(config_home)
    if service is not None:
        env["BULKIO_URL"] = f"http://127.0.0.1:{service.port}"
        env["BULKIO_TOKEN"] = service.token
    env.update(extra)
    return env


def run(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``bulkio ARGS`` with stdout and stderr captured (so neither is a terminal)."""
    return subprocess.run(
        [BULKIO, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def document(done: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document the run printed on stdout (anything else fails the test)."""
    assert done.stdout.strip(), f"nothing on stdout; stderr:\n{done.stderr}"
    return json.loads(done.stdout)


def same_job(printed: dict[str, Any], served: dict[str, Any]) -> None:
    """The job the client printed is the one the API serves (signed URLs differ per call)."""
    volatile = ("events_url", "download_url", "updated")
    assert {k: v for k, v in printed.items() if k not in volatile} == {
        k: v for k, v in served.items() if k not in volatile
    }
