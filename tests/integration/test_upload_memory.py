"""The local store's data URL streams a PATCH body to the file as it arrives: the API's memory
does not grow with the body (256 MiB sent; the API's processes, granian's workers included,
sampled every 20 ms while it arrives)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from engine import uploads
from engine.settings import Settings
from engine.storage import open_storage
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

BODY = 256 * 1024 * 1024
#: Allowed growth of the API's resident memory while the body arrives.
GROWTH = 48 * 1024 * 1024


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (granian serves from child processes)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines()
                          if line.startswith("VmRSS:"))  # fmt: skip
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def zeros(n: int) -> Iterator[bytes]:
    chunk = b"\0" * (1024 * 1024)
    for _ in range(n // len(chunk)):
        yield chunk


def test_a_big_patch_body_is_streamed_not_held(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    assert service.api is not None
    res = service.client.post("/v1/uploads", json={"file_name": "zeros.csv", "size": BODY})
    view = res.json()
    baseline = tree_rss(service.api.pid)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(service.api.pid))  # type: ignore[union-attr]
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        with httpx.Client(timeout=300) as anonymous:
            sent = anonymous.patch(
                view["data_url"],
                headers={"Upload-Offset": "0", "Content-Length": str(BODY)},
                content=zeros(BODY),
            )
    finally:
        done.set()
        sampler.join()
    seconds = time.monotonic() - started
    assert sent.status_code == 204, sent.text
    assert sent.headers["upload-offset"] == str(BODY)
    print(
        f"\n256 MiB PATCH: {BODY / seconds / 2**20:.0f} MiB/s, API RSS {baseline / 2**20:.0f} MiB "
        f"-> peak {peak / 2**20:.0f} MiB (+{(peak - baseline) / 2**20:.1f} MiB)"
    )
    assert peak - baseline < GROWTH
    completed = service.client.post(f"/v1/uploads/{view['upload_id']}/complete").json()
    assert completed["status"] == "completed"  # its SHA-256 was computed on the way
    db.execute("UPDATE uploads SET expires_at = now() - interval '1 s'")  # free the disk
    assert uploads.expire(db, open_storage(Settings(storage_url=service.env["BULKIO_STORAGE_URL"])))
