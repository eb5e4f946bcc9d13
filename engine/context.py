"""What a job runner is given, and what it answers: shared by the import and export runners.

The worker (:mod:`engine.worker`) builds one :class:`JobContext` per job attempt and calls
``engine.imports.run.run_import`` or ``engine.exports.run.run_export`` with it; each returns a
:class:`RunResult`.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import Any

from engine.resources import Resource
from engine.settings import Settings
from engine.storage import Storage


@dataclass(slots=True)
class JobContext:
    settings: Settings
    storage: Storage
    catalog: dict[str, Resource]
    #: psycopg connection (autocommit) for job state
    conn: Any
    #: ADBC connection for batches (imports)
    bulk: Any
    #: this worker's lease owner name
    worker: str
    #: set when the process is asked to stop: the job is handed back at the next batch boundary
    stopping: threading.Event


class RunResult(enum.Enum):
    """How one attempt at a job ended."""

    #: another worker holds the lease, the job is already finished, or its attempts are used up
    NOT_CLAIMED = "not-claimed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: handed back at shutdown; another worker resumes from the checkpoint
    RELEASED = "released"
    #: the lease expired under this worker and another took the job over
    LEASE_LOST = "lease-lost"
