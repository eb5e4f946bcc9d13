"""Each job's event log: what happened to it, in order, numbered per job from 1 without gaps.

The events are written by PostgreSQL itself (triggers on ``jobs``, migration 0010), in the
transaction of the state change that causes them, so the log can neither miss a change nor tell
of one that was rolled back, and no runner calls anything to write one:

* ``queued``: the job was created;
* ``started``: its first claim by a worker (``attempt``);
* ``progress``: after each committed import batch / saved export progress: the counters
  (``processed``, ``successful``, ``failed``, ``error_count``, ``inserted``, ``updated``,
  ``bytes_read``, ``total_bytes``), ``rows_per_sec`` and, for imports, ``batches``;
* ``warning``: a new warning (``message``);
* ``retrying``: a later claim (``attempt``; ``reason``: ``worker_lost`` when the previous worker's
  lease ran out, ``requeued`` when it handed the job back or hit a retryable error);
* ``completed`` / ``failed`` / ``cancelled``: the end, once, with the final counters,
  ``total_records``, ``duration_ms`` and ``error`` (failed) or ``result_bytes`` (exports).

Each transaction that writes events sends ``NOTIFY bulkio_job_events, '<job id>'`` (delivered at
commit), which the API turns into wake-ups of the streams following that job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

#: The NOTIFY channel of new events; the payload is the job id.
CHANNEL = "bulkio_job_events"
TYPES = (
    "queued",
    "started",
    "progress",
    "warning",
    "retrying",
    "completed",
    "failed",
    "cancelled",
)
#: The last event of every job is one of these.
TERMINAL_TYPES = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    type: str
    data: dict[str, Any]
    created_at: datetime

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


def page(conn: psycopg.Connection[Any], job_id: str, after: int, limit: int) -> list[Event]:
    """Up to ``limit`` events of the job with ``seq > after``, in order."""
    rows = conn.execute(
        "SELECT seq, type, data, created_at FROM job_events "
        "WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (job_id, after, limit),
    ).fetchall()
    return [Event(int(r[0]), str(r[1]), dict(r[2]), r[3]) for r in rows]
