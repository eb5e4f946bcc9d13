"""The client's direct uploads (engine/client/direct.py) without servers: sizes of
--direct-threshold, and retries that end (a small API over httpx.MockTransport whose data URL
always breaks; the waits recorded instead of slept)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from rich.console import Console

from engine.client.config import Target
from engine.client.direct import RETRIES, DirectUpload, parse_size
from engine.client.display import Output
from engine.client.errors import ClientError
from engine.client.service import Service

UPLOAD = "0b9e5c1e-7d1a-4a51-9a39-3c7c1d0f4d11"


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("1048576", 1024**2), ("64MiB", 64 * 1024**2), ("64M", 64 * 1024**2),
     ("512k", 512 * 1024), ("1 GiB", 1024**3), ("2G", 2 * 1024**3), ("1TB", 1024**4)],
)  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "1.5G", "-1", "64 XB", "MiB"])
def test_not_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


class BrokenNetwork:
    """An API whose upload's data URL never takes a byte: the connection always breaks."""

    def __init__(self) -> None:
        self.patches = 0
        self.reads = 0

    def view(self) -> dict[str, Any]:
        return {"upload_id": UPLOAD, "status": "open", "storage": "local", "received_bytes": 0,
                "size": 5, "parts": [], "part_size": 5,
                "data_url": f"http://bulkio.test/v1/uploads/{UPLOAD}/data?signature=s"}  # fmt: skip

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/jobs":
            return httpx.Response(200, json={"jobs": [], "next_cursor": None, "next": None})
        if path == "/v1/uploads" and request.method == "POST":
            return httpx.Response(201, json=self.view())
        if path == f"/v1/uploads/{UPLOAD}":
            self.reads += 1
            return httpx.Response(200, json=self.view())
        if path.endswith("/data"):
            self.patches += 1
            raise httpx.ReadError("connection reset by peer")
        return httpx.Response(404, json={"detail": f"unexpected {request.method} {path}"})


def test_a_network_that_never_comes_back_ends_in_an_error_not_a_loop(tmp_path: Any) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(b"id,x\n")
    api = BrokenNetwork()
    slept: list[float] = []
    err = io.StringIO()
    out = Output(json_mode=True, console=Console(file=err, width=200), interactive=False)
    target = Target("http://bulkio.test", "tok", "default", "--url", "--token")
    with Service(target, httpx.MockTransport(api)) as service:
        upload = DirectUpload(service, out, path, sleep=slept.append)
        with pytest.raises(ClientError, match=f"gave up after {RETRIES} tries in a row") as caught:
            upload.run({"resource": "users"}, None)
    assert "connection reset by peer" in str(caught.value)
    assert api.patches == RETRIES + 1 and api.reads == RETRIES
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]  # backoff, capped
    assert err.getvalue().count("trying again") == RETRIES
