"""Following a job without a server: a small in-process HTTP server (``httpx.MockTransport``)
answers the job view and its events the way the API does, or the way an older server, a full
one or a broken network does. The client follows the Server-Sent Events, falls back to polling
with backoff, gives up at its deadline, and its commands exit with the documented codes."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from rich.console import Console

from engine.client import main
from engine.client.config import Target
from engine.client.errors import NotAllowed, WaitTimedOut
from engine.client.follow import POLL_FIRST, Follower, Update
from engine.client.service import Service, Upload
from engine.client.sse import parse

JOB = "5b0c1f1e-0000-4000-8000-000000000001"


def view(status: str, processed: int = 0, failed: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": JOB,
        "kind": "import",
        "status": status,
        "resource": "users",
        "format": "csv",
        "mode": "upsert",
        "processed": processed,
        "successful": processed - failed,
        "failed": failed,
        "error_count": failed,
        "progress": {"bytes_read": processed * 10, "total_bytes": 30_000, "percent": None},
        "rows_per_sec": None,
        "errors": [],
        **extra,
    }


def sse(*events: tuple[int, str, dict[str, Any]], comment: bool = True) -> bytes:
    out = b": keep-alive\n\n" if comment else b""
    for seq, kind, data in events:
        body = json.dumps({"seq": seq, "type": kind, "created": "2026-01-01T00:00:00Z",
                           "data": data})  # fmt: skip
        out += f"id: {seq}\nevent: {kind}\ndata: {body}\n\n".encode()
    return out


def counters(processed: int, failed: int = 0) -> dict[str, Any]:
    return {
        "processed": processed,
        "successful": processed - failed,
        "failed": failed,
        "bytes_read": processed * 10,
        "total_bytes": 30_000,
        "rows_per_sec": 1000.0,
    }


class Server:
    """Answers ``GET /v1/jobs/{id}`` from ``views`` (the last one repeats) and the events route
    with ``events(request)``; records every request."""

    def __init__(
        self,
        views: list[dict[str, Any]],
        events: Callable[[httpx.Request], httpx.Response],
    ) -> None:
        self.views = views
        self.events = events
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/events"):
            return self.events(request)
        if path == f"/v1/jobs/{JOB}":
            current = self.views.pop(0) if len(self.views) > 1 else self.views[0]
            return httpx.Response(200, json=current)
        if path == "/v1/jobs":
            return httpx.Response(200, json={"jobs": [], "next_cursor": None, "next": None})
        return httpx.Response(404, json={"detail": f"no route {path}"})

    def paths(self) -> list[str]:
        return [r.url.path.removeprefix(f"/v1/jobs/{JOB}") or "view" for r in self.requests]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 4))
        self.now += seconds


def follower(
    server: Server, first: dict[str, Any], timeout: float | None = None
) -> tuple[Follower, Clock]:
    clock = Clock()
    target = Target("http://bulkio.test", "tok", "default", "--url", "--token")
    service = Service(target, transport=httpx.MockTransport(server))
    return (
        Follower(
            service,
            first,
            timeout,
            resume_hint="bulkio jobs watch X",
            clock=clock.time,
            sleep=clock.sleep,
        ),
        clock,
    )


def stream(body: bytes, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body)

    return answer


def test_the_event_stream_carries_the_job_to_its_end_without_polling() -> None:
    body = sse(
        (1, "queued", {"kind": "import"}),
        (2, "started", {"attempt": 1}),
        (3, "progress", counters(1000, 10)),
        (4, "warning", {"message": "unknown column 'x' ignored"}),
        (5, "progress", counters(3000, 25)),
        (6, "completed", {**counters(3000, 25), "status": "completed"}),
    )
    server = Server([view("queued")], stream(body))
    f, clock = follower(server, view("queued"))
    got = list(f.updates())
    assert [(u.what, u.status, u.processed, u.failed) for u in got] == [
        ("view", "queued", 0, 0),
        ("queued", "queued", 0, 0),
        ("started", "running", 0, 0),
        ("progress", "running", 1000, 10),
        ("warning", "running", 1000, 10),
        ("progress", "running", 3000, 25),
        ("completed", "completed", 3000, 25),
    ]
    assert got[4].note == "unknown column 'x' ignored"
    assert f.mode == "events" and clock.sleeps == []
    (req,) = server.requests
    assert req.headers["accept"] == "text/event-stream"
    assert req.headers["last-event-id"] == "0"
    assert req.headers["authorization"] == "Bearer tok"


@pytest.mark.parametrize("status", [404, 405, 503])
def test_without_a_stream_the_view_is_polled_with_backoff(status: int) -> None:
    views = [view("running", 0)] * 3 + [view("running", 1000), view("completed", 3000, 7)]
    server = Server(views, lambda r: httpx.Response(status, json={"detail": "Not Found"}))
    f, clock = follower(server, view("running", 0))
    got = list(f.updates())
    assert [(u.status, u.processed) for u in got] == [
        ("running", 0), ("running", 1000), ("completed", 3000)
    ]  # fmt: skip
    assert f.mode == "polling"
    # Unchanged views: 0.5, 0.75, 1.125 s ... ; a change starts again from 0.5 s.
    assert clock.sleeps == [POLL_FIRST, 0.75, 1.125, 1.6875, POLL_FIRST]
    assert server.paths() == ["/events", *["view"] * 5]


def test_a_stream_that_keeps_breaking_is_retried_then_replaced_by_polling() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server = Server([view("running", 0), view("completed", 3000)], broken)
    f, _ = follower(server, view("running", 0))
    assert [u.status for u in f.updates()] == ["running", "completed"]
    assert f.mode == "polling"
    assert server.paths().count("/events") == 4  # the first try and 3 reconnections


def test_a_stream_that_ends_early_resumes_after_the_last_event_seen() -> None:
    calls: list[str] = []

    def events(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["last-event-id"])
        if len(calls) == 1:  # a proxy cut the stream after two events
            return stream(sse((1, "queued", {}), (2, "started", {"attempt": 1})))(request)
        return stream(sse((3, "cancelled", {**counters(0), "status": "cancelled"})))(request)

    server = Server([view("running")], events)
    f, _ = follower(server, view("queued"))
    assert [u.status for u in f.updates()][-1] == "cancelled"
    assert calls == ["0", "2"]


def test_a_job_that_ended_meanwhile_answers_204_and_the_view_tells_the_end() -> None:
    server = Server([view("completed", 3000)], lambda r: httpx.Response(204))
    f, _ = follower(server, view("running", 10))
    assert [u.status for u in f.updates()] == ["running", "completed"]


def test_the_deadline_ends_the_wait_with_the_latest_view() -> None:
    server = Server([view("queued")], lambda r: httpx.Response(404))
    f, clock = follower(server, view("queued"), timeout=3.0)
    with pytest.raises(WaitTimedOut, match=r"still queued after 3 s.*bulkio jobs watch X") as exc:
        list(f.updates())
    assert exc.value.job["status"] == "queued"
    assert clock.now == pytest.approx(3.0) and sum(clock.sleeps) == pytest.approx(3.0)


def test_the_deadline_passes_while_the_stream_sends_only_keep_alives() -> None:
    clock_ref: list[Clock] = []

    def events(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            yield sse((1, "queued", {}), comment=False)
            for _ in range(1000):  # a keep-alive every 15 s, for over four hours
                clock_ref[0].now += 15
                yield b": keep-alive\n\n"

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    server = Server([view("queued")], events)
    f, clock = follower(server, view("queued"), timeout=40.0)
    clock_ref.append(clock)
    with pytest.raises(WaitTimedOut, match="still queued after 40 s"):
        list(f.updates())
    assert 40 <= clock.now <= 45


def test_a_refused_token_is_not_mistaken_for_a_missing_stream() -> None:
    server = Server([view("running")], lambda r: httpx.Response(401, json={"detail": "bad"}))
    f, _ = follower(server, view("running"))
    with pytest.raises(NotAllowed, match="bad"):
        list(f.updates())


def test_sse_framing() -> None:
    lines = [
        ": comment", "id: 7", "event: progress", 'data: {"seq": 7,', 'data: "type": "progress"}',
        "", "id: x", "data: {}", "", "id: 8", "data: not json", "", "data: {}", "",
        "id: 9", "data:{}", "",
    ]  # fmt: skip
    got = list(parse(lines))
    # "id: x" is no sequence number, "not json" no event; an id holds until the next one.
    assert [(e.seq, e.type) for e in got] == [(7, "progress"), (8, "message"), (9, "message")]
    assert got[0].body == {"seq": 7, "type": "progress"}


def test_update_of_a_view_and_of_events() -> None:
    base = Update.of_view(view("running", 100, 1))
    retry = base.after(parse_one(4, "retrying", {"attempt": 2, "reason": "worker_lost"}))
    assert (retry.status, retry.note) == ("running", "retrying (worker lost), attempt 2")
    failed = base.after(parse_one(5, "failed", {**counters(100, 1), "error": "bad header"}))
    assert (failed.status, failed.terminal, failed.note) == ("failed", True, "bad header")


def parse_one(seq: int, kind: str, data: dict[str, Any]) -> Any:
    (event,) = parse(sse((seq, kind, data), comment=False).decode().split("\n"))
    return event


def test_the_upload_body_is_multipart_with_a_correct_length_and_counts_the_file(
    tmp_path: Any,
) -> None:
    path = tmp_path / 'we"ird\nname.csv'
    path.write_bytes(b"x" * 3_000_001)
    seen: list[int] = []
    upload = Upload(path, {"resource": "users", "mode": "insert"}, seen.append)
    body = b"".join(upload.body())
    assert int(upload.headers["Content-Length"]) == len(body)
    assert sum(seen) == 3_000_001 and len(seen) == 3
    assert b'filename="we%22ird%0Aname.csv"' in body
    assert body.endswith(f"\r\n--{upload.boundary}--\r\n".encode())


# ------------------------------------------------------------------ the commands


def run(handler: Callable[[httpx.Request], httpx.Response], *args: str) -> tuple[int, str, str]:
    """``bulkio ARGS`` in-process: stdout and stderr are no terminals."""
    out, err = io.StringIO(), io.StringIO()
    code = main(
        list(args),
        console=Console(file=err, width=200, force_terminal=False),
        transport=httpx.MockTransport(handler),
        stdout=out,
        environ={"BULKIO_URL": "http://bulkio.test", "BULKIO_TOKEN": "tok"},
    )
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("final", "flags", "code"),
    [
        (view("completed", 3000, 0), [], 0),
        (view("completed", 3000, 5), [], 0),
        (view("completed", 3000, 5), ["--strict"], 5),
        (view("failed", 1000, 0, error="bad header"), [], 2),
        (view("cancelled", 1000, 0), [], 2),
    ],
)
def test_watch_exits_by_the_outcome_and_prints_the_final_view(
    final: dict[str, Any], flags: list[str], code: int
) -> None:
    server = Server([view("running"), final], lambda r: httpx.Response(404))
    got, out, err = run(server, "jobs", "watch", JOB, *flags)
    assert got == code, err
    assert json.loads(out) == final  # stdout is no terminal: exactly the one document
    assert f"job {JOB} {final['status']}" in err


def test_watch_timeout_exits_3_and_says_how_to_resume() -> None:
    server = Server([view("queued")], lambda r: httpx.Response(404))
    got, out, err = run(server, "jobs", "watch", JOB, "--timeout", "0.2", "--profile", "p",
                        "--url", "http://bulkio.test")  # fmt: skip
    assert got == 3
    assert json.loads(out)["status"] == "queued"
    resume = f"Resume watching with: bulkio jobs watch {JOB} --profile p --url http://bulkio.test"
    assert resume in err


@pytest.mark.parametrize(
    ("status", "code"), [(400, 1), (401, 4), (403, 4), (404, 1), (409, 1), (500, 1)]
)
def test_problem_details_are_shown_as_their_detail(status: int, code: int) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status,
            json={"type": "about:blank", "title": "x", "status": status, "detail": "the detail"},
            headers={"content-type": "application/problem+json"},
        )

    got, out, err = run(answer, "jobs", "cancel", JOB)
    assert (got, out) == (code, "")
    assert err.startswith("error: the detail")


def test_an_error_without_problem_details_shows_its_status_and_text() -> None:
    got, _, err = run(lambda r: httpx.Response(502, text="<html>Bad gateway</html>"), "jobs",
                      "show", JOB)  # fmt: skip
    assert got == 1
    assert err.strip() == "error: HTTP 502 Bad Gateway: <html>Bad gateway</html>"
