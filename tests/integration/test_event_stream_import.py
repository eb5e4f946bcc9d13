"""A real Server-Sent Events client follows a 200,000-record import with planted defects from its
upload to its end (issue #10), while a second client disconnects mid-way and resumes with
``Last-Event-ID``, and the worker is SIGKILLed mid-import:

* sequence numbers run 1, 2, ... without a gap, one terminal event last;
* every batch is reported once (batches 1..200), progress never goes back, and the last
  ``progress`` equals the final counters (the terminal event, the job view, the generator's count);
* the resumed client's events are exactly the uninterrupted client's: nothing lost or repeated;
* the kill shows as ``retrying`` (attempt 2, the worker was lost), then the job completes.
"""

from __future__ import annotations

import signal
import threading
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from tests.support.datafiles import make
from tests.support.service import Bulkio
from tests.support.sse import Message, events, open_stream
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

ROWS = 200_000
COUNTERS = ("processed", "successful", "failed", "error_count", "inserted", "updated", "bytes_read")


class Follower(threading.Thread):
    """An SSE client in a thread: reads the job's stream into ``got`` until it ends, or until
    ``stop_after`` events, then disconnects."""

    def __init__(
        self,
        service: Bulkio,
        job_id: str,
        *,
        last_event_id: int | None = None,
        stop_after: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{service.port}"
        self.token = service.token
        self.path = f"/v1/jobs/{job_id}/events"
        self.last_event_id = last_event_id
        self.stop_after = stop_after
        self.got: list[Message] = []
        self.status: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(
                    base_url=self.base,
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=httpx.Timeout(10, read=60),
                ) as client,
                open_stream(client, self.path, last_event_id=self.last_event_id) as res,
            ):
                self.status = res.status_code
                for message in events(res):
                    self.got.append(message)
                    if self.stop_after is not None and len(self.got) >= self.stop_after:
                        return
        except BaseException as exc:  # reported by the test
            self.error = exc

    def progress(self) -> int:
        done = [m.json()["data"]["processed"] for m in self.got if m.event == "progress"]
        return max(done, default=0)


def _finish(follower: Follower, service: Bulkio) -> list[Message]:
    follower.join(timeout=300)
    assert not follower.is_alive(), f"the stream did not end\n{service.logs()}"
    assert follower.error is None, follower.error
    assert follower.status == 200
    return follower.got


def test_an_sse_client_follows_a_200k_import_through_a_reconnect_and_a_worker_kill(
    service: Bulkio, datadir: Path
) -> None:
    path, expected = make(datadir, "users", "csv", ROWS, seed=31)
    res = service.upload(path, "users")
    assert res.status_code == 202, res.text
    job_id = res.json()["job_id"]

    whole = Follower(service, job_id)
    whole.start()
    first_half = Follower(service, job_id, stop_after=25)
    first_half.start()
    cut = _finish(first_half, service)  # disconnected after 25 events

    wait_until(
        lambda: whole.progress() >= 40_000,
        180,
        message=lambda: f"40,000 records committed\n{service.logs()}",
    )
    for worker in service.workers:
        worker.signal(signal.SIGKILL)
        worker.stop()
    at_kill = service.client.get(f"/v1/jobs/{job_id}").json()["processed"]
    assert at_kill < ROWS, "the kill must land mid-import"
    service.workers = []
    service.start_worker()

    second_half = Follower(service, job_id, last_event_id=cut[-1].seq)
    second_half.start()
    got = _finish(whole, service)
    resumed = _finish(second_half, service)

    # gapless, one terminal event, last
    assert [m.seq for m in got] == list(range(1, len(got) + 1))
    types = [m.event for m in got]
    assert types[:2] == ["queued", "started"] and types[-1] == "completed"
    assert sum(t in ("completed", "failed", "cancelled") for t in types) == 1
    # the reconnect lost nothing and repeated nothing
    assert [(m.seq, m.event, m.data) for m in cut + resumed] == [
        (m.seq, m.event, m.data) for m in got
    ]
    # the kill: retrying (attempt 2, worker lost) between progress events, then completion
    retrying = [m for m in got if m.event == "retrying"]
    assert [m.json()["data"] for m in retrying] == [{"attempt": 2, "reason": "worker_lost"}]
    where = got.index(retrying[0])
    assert "progress" in types[:where] and "progress" in types[where:]
    # every batch once, counters never going back, the last progress = the end
    progress = [m.json()["data"] for m in got if m.event == "progress"]
    assert [p["batches"] for p in progress] == list(range(1, ROWS // 1000 + 1))
    assert all(a["processed"] < b["processed"] for a, b in pairwise(progress))
    end = got[-1].json()["data"]
    assert {k: progress[-1][k] for k in COUNTERS} == {k: end[k] for k in COUNTERS}
    job = service.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["attempts"] == 2
    assert {k: end[k] for k in ("processed", "successful", "failed", "error_count")} == {
        k: job[k] for k in ("processed", "successful", "failed", "error_count")
    }
    assert (end["processed"], end["successful"], end["failed"]) == (
        expected.total_records,
        expected.successful,
        expected.failed,
    )
    # the JSON pages tell the same story
    page = service.client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
    assert [e["seq"] for e in page["events"]] == [m.seq for m in got]
    assert [e for e in page["events"]] == [m.json() for m in got]
