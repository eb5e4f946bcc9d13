"""A real webhook receiver on loopback for the tests: it verifies every request with the Standard
Webhooks reference library (not our code) and answers as scripted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.servers import free_port


@dataclass
class Received:
    at: float  # time.monotonic() when the request was read
    path: str
    headers: dict[str, str]
    body: bytes
    #: For each secret the receiver knows: whether the reference library verified the request.
    verified: dict[str, bool]
    answered: int


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: Hold the request until this is set (or 120 s pass) before answering.
    stall: threading.Event | None = None


class Receiver:
    """``Receiver(secrets).start()`` listens on ``port`` (chosen at creation, so a test can
    give the URL before the receiver is up); ``script`` answers requests in order, then 200."""

    def __init__(
        self, secrets: list[str] | None = None, script: list[Answer] | None = None
    ) -> None:
        self.port = free_port()
        self.secrets = list(secrets or [])
        self.script = list(script or [])
        self.received: list[Received] = []
        self.arrived = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver._handle(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        verified = {}
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified[secret] = True
            except WebhookVerificationError:
                verified[secret] = False
        with self.arrived:
            answer = self.script.pop(0) if self.script else Answer()
            self.received.append(
                Received(time.monotonic(), handler.path, headers, body, verified, answer.status)
            )
            self.arrived.notify_all()
        if answer.stall is not None:
            answer.stall.wait(120)
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:
            pass  # the sender is gone (killed)

    def wait_for(
        self, count: int, timeout: float = 90, why: Callable[[], str] = str
    ) -> list[Received]:
        """The first ``count`` requests, once they have arrived."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self.received)} of {count} requests arrived\n{why()}"
                    )
                self.arrived.wait(left)
            return list(self.received[:count])
