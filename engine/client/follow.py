"""Following a job to its end: its Server-Sent Events (``GET /v1/jobs/{id}/events``), or, when
the server cannot stream (an older server: 404/405; streams at their limit: 429/503; a stream
that keeps breaking), its view polled with backoff. Either way the caller gets :class:`Update`
values and a :class:`WaitTimedOut` once the deadline passes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from engine.client.errors import ApiError, ClientError, Unreachable, WaitTimedOut
from engine.client.service import Service, StreamUnavailable
from engine.client.sse import Event

TERMINAL = ("completed", "failed", "cancelled")
#: Polling: first interval, growth while nothing changes, longest interval (seconds).
POLL_FIRST, POLL_FACTOR, POLL_MAX = 0.5, 1.5, 5.0
#: Broken streams in a row before polling instead; polls in a row that get no answer before
#: giving up.
STREAM_RETRIES, POLL_RETRIES = 3, 8
#: Longest wait for one read of the stream: the API sends a keep-alive every 15 s.
STREAM_READ = 30.0


@dataclass(frozen=True, slots=True)
class Update:
    """Where a job stands: its status, counters, and what just happened (``what``: an event
    type, or ``view`` for a polled view; ``note``: a warning or a retry's reason)."""

    what: str
    status: str
    processed: int = 0
    successful: int = 0
    failed: int = 0
    bytes_read: int = 0
    total_bytes: int | None = None
    rows_per_sec: float | None = None
    note: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of_view(cls, view: dict[str, Any]) -> Update:
        progress = view.get("progress") or {}
        return cls(
            what="view",
            status=str(view.get("status")),
            processed=int(view.get("processed") or 0),
            successful=int(view.get("successful") or 0),
            failed=int(view.get("failed") or 0),
            bytes_read=int(progress.get("bytes_read") or 0),
            total_bytes=progress.get("total_bytes"),
            rows_per_sec=view.get("rows_per_sec"),
        )

    def after(self, event: Event) -> Update:
        data = event.data
        step = replace(self, what=event.type, note=None)
        if "processed" in data:
            step = replace(
                step,
                processed=int(data.get("processed") or 0),
                successful=int(data.get("successful") or 0),
                failed=int(data.get("failed") or 0),
                bytes_read=int(data.get("bytes_read") or 0),
                total_bytes=data.get("total_bytes", self.total_bytes),
                rows_per_sec=data.get("rows_per_sec"),
            )
        if event.type in TERMINAL:
            return replace(step, status=event.type, note=data.get("error"))
        if event.type == "started":
            return replace(step, status="running")
        if event.type == "retrying":
            reason = str(data.get("reason", "")).replace("_", " ")
            return replace(step, status="running", note=f"retrying ({reason}), attempt "
                           f"{data.get('attempt')}")  # fmt: skip
        if event.type == "warning":
            return replace(step, note=str(data.get("message", "")))
        return step


class Follower:
    """Follows one job; ``updates()`` ends after the terminal update."""

    def __init__(
        self,
        service: Service,
        view: dict[str, Any],
        timeout: float | None,
        *,
        resume_hint: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.job_id = str(view["job_id"])
        self.view = view
        self.timeout = timeout
        self.resume_hint = resume_hint
        self._clock = clock
        self._sleep = sleep
        self.deadline = None if timeout is None else clock() + timeout
        #: How the job was followed in the end: "events" or "polling".
        self.mode = "events"

    # ------------------------------------------------------------------ time

    def _left(self) -> float | None:
        return None if self.deadline is None else self.deadline - self._clock()

    def _check_deadline(self) -> None:
        left = self._left()
        if left is not None and left <= 0:
            self._timed_out()

    def _timed_out(self) -> None:
        with contextlib.suppress(ClientError):  # else the last view we have
            self.view = self.service.job(self.job_id)
        status = self.view.get("status", "running")
        raise WaitTimedOut(
            f"job {self.job_id} is still {status} after {self.timeout:g} s; it goes on without "
            f"this command. Resume watching with: {self.resume_hint}",
            self.view,
        )

    def _pause(self, seconds: float) -> None:
        left = self._left()
        self._sleep(max(0.0, seconds if left is None else min(seconds, left)))
        self._check_deadline()

    # ------------------------------------------------------------------ following

    def updates(self) -> Iterator[Update]:
        current = Update.of_view(self.view)
        yield current
        if current.terminal:
            return
        after, broken = 0, 0
        while self.mode == "events":
            self._check_deadline()
            left = self._left()
            read = STREAM_READ if left is None else min(STREAM_READ, left)
            try:
                with self.service.events(
                    self.job_id, after, read, on_line=self._check_deadline
                ) as stream:
                    for event in stream:
                        broken = 0
                        after = event.seq
                        current = current.after(event)
                        yield current
                        if current.terminal:
                            return
                        self._check_deadline()
                # The stream ended without the job's end (a proxy or a restart closed it), or
                # the job ended with nothing left to send (204): the view says which.
                self.view = self.service.job(self.job_id)
                if Update.of_view(self.view).terminal:
                    yield Update.of_view(self.view)
                    return
                broken += 1
            except StreamUnavailable:
                self.mode = "polling"
            except Unreachable:
                self._check_deadline()  # a read cut short by the deadline
                broken += 1
            if broken > STREAM_RETRIES:
                self.mode = "polling"
            elif broken:
                self._pause(POLL_FIRST * broken)
        yield from self._poll(current)

    def _poll(self, current: Update) -> Iterator[Update]:
        delay, failures = POLL_FIRST, 0
        while True:
            self._pause(delay)
            try:
                self.view = self.service.job(self.job_id)
                failures = 0
            except Unreachable:
                failures += 1
                if failures >= POLL_RETRIES:
                    raise
                delay = min(delay * POLL_FACTOR, POLL_MAX)
                continue
            except ApiError as exc:
                if exc.status != 429:
                    raise
                delay = max(exc.retry_after or POLL_MAX, POLL_FIRST)
                continue
            update = Update.of_view(self.view)
            if replace(update, what=current.what, note=current.note) != current:
                current = update
                delay = POLL_FIRST
                yield update
            else:
                delay = min(delay * POLL_FACTOR, POLL_MAX)
            if update.terminal:
                return
