"""The one wait-until loop of the tests and benchmarks.

Tests wait for something another process does (a job reaching a state, a worker saying it is
ready, a server accepting connections); they poll for it with :func:`wait_until` instead of
sleeping for a guessed time, and fail with a message that says what never happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["WaitTimeout", "wait_until"]


class WaitTimeout(AssertionError):
    """Raised by :func:`wait_until` when its predicate stayed falsy for the whole timeout."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and
    return that. After ``timeout`` seconds raise :class:`WaitTimeout` naming ``message`` (a
    callable is called only then: e.g. to add the end of a log). An exception raised by the
    predicate ends the wait at once (a job that failed instead of progressing)."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what or predicate!r}")
        time.sleep(interval)
