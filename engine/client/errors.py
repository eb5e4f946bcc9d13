"""Exit codes of the ``bulkio`` client and the errors that end a command with one.

::

    ClientError (1)               an error: bad usage, a missing file, an unreachable server,
    │                             a problem+json answer of the API (its ``detail`` is the message)
    ├── Unreachable               no answer: connection refused or broken, a timeout
    ├── ApiError                  an error status; ``status`` and ``detail`` of its problem+json
    │   └── NotAllowed (4)        401 or 403: no token, a wrong or revoked one, a missing scope
    └── WaitTimedOut (3)          ``--timeout`` passed before the job ended

A job that ends ``failed`` or ``cancelled`` (2), or completes with rejected records under
``--strict`` (5), is no error of the client: the command shows the job and returns that code.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    OK = 0
    ERROR = 1
    JOB_ENDED = 2
    TIMED_OUT = 3
    NOT_ALLOWED = 4
    REJECTED = 5


#: The exit codes as ``--help`` and the README list them.
EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 error (usage, file, network, API); 2 the job failed or was cancelled; "
    "3 --timeout passed before the job ended (resume with: bulkio jobs watch ID); "
    "4 not authenticated or not allowed (HTTP 401/403); "
    "5 --strict and the job rejected records."
)


class ClientError(Exception):
    """Raised when a command cannot do what it was asked; the message is shown as is."""

    exit_code: Exit = Exit.ERROR


class Unreachable(ClientError):
    """Raised when a request gets no answer (connection refused or broken, a timeout)."""


class ApiError(ClientError):
    """Raised when the API answers with an error status (``detail`` of its problem+json)."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class NotAllowed(ApiError):
    """Raised on 401/403, or before a request when no token is configured at all."""

    exit_code = Exit.NOT_ALLOWED


class WaitTimedOut(ClientError):
    """Raised when ``--timeout`` passes while the job still runs; ``job`` is its last view."""

    exit_code = Exit.TIMED_OUT

    def __init__(self, message: str, job: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job
