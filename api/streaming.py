"""Streaming responses that always release what they read from."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("bulkio.api")


def _noop() -> None:
    pass


class ClosingStream:
    """A sync byte iterator for litestar's ``Stream`` that reliably releases what it reads from.

    A client that goes away leaves the iteration suspended: granian keeps accepting sends,
    litestar stops iterating (possibly while a ``next()`` still runs in the executor) and closes
    nothing, so PostgreSQL would sit in ``ClientWrite`` holding the snapshot. Pass
    ``background=BackgroundTask(stream.close)``: it waits for a running ``next()``, then calls
    ``release`` (default: the iterator's own ``close``).
    """

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None] | None = None) -> None:
        self._chunks = chunks
        self._release: Callable[[], None] = release or getattr(chunks, "close", None) or _noop
        self._lock = threading.Lock()
        self._done = False

    def __iter__(self) -> ClosingStream:
        return self

    def __next__(self) -> bytes:
        with self._lock:
            if self._done:
                raise StopIteration
            try:
                return next(self._chunks)
            except StopIteration:
                self._finish()
                raise
            except ValueError as exc:  # litestar's sync-iterator wrapper takes it for the end
                self._finish()
                raise RuntimeError(f"stream failed: {exc}") from exc
            except BaseException:
                log.exception("response stream failed")
                self._finish()
                raise

    def close(self) -> None:
        with self._lock:
            self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._release()
