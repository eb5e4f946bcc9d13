"""Streaming responses that always release what they read from."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.connection import Request
from litestar.enums import MediaType
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Message, Receive, Scope, Send, TypeEncodersMap
from litestar.utils.helpers import get_enum_string_value

from engine import metrics

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.datastructures import Cookie

log = logging.getLogger("bulkio.api")

#: ``application_name`` of the connections that streamed responses read from (pg_stat_activity).
STREAM_CONNECTION = "bulkio-api-stream"


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


class _Stalled(Exception):
    """Raised when one chunk could not be handed to the client within the stall bound."""


class _StallGuardedResponse(ASGIStreamingResponse):
    """Gives up when one ``send`` blocks for ``stall_seconds``: the client stopped reading and the
    socket buffers are full. The response then ends without its last chunk (granian closes the
    connection, so the client sees a truncated body, never a complete-looking one) and the
    background task releases what the stream read from."""

    __slots__ = ("_released", "stall_seconds")

    def __init__(self, *, stall_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stall_seconds = stall_seconds
        self._released = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # also when sending failed: the background task is what releases the stream
            with anyio.CancelScope(shield=True):
                await self.after_response()

    async def after_response(self) -> None:
        if not self._released:
            self._released = True
            await super().after_response()

    async def send_body(self, send: Send, receive: Receive) -> None:
        async def send_or_give_up(message: Message) -> None:
            with anyio.move_on_after(self.stall_seconds or None) as scope:
                await send(message)
            if scope.cancelled_caught:
                raise _Stalled

        try:
            await super().send_body(send_or_give_up, receive)
        except* _Stalled:
            metrics.stream_stalled()
            log.warning(
                "the client read nothing for %s s: streamed response closed", self.stall_seconds
            )


class GuardedStream(Stream):
    """The response for a :class:`ClosingStream`: ``closing`` is released when the response has
    been sent, when the client goes away, and when the client stops reading for
    ``stall_seconds`` (``BULKIO_STREAM_STALL_SECONDS``; 0: wait for ever)."""

    __slots__ = ("stall_seconds",)

    def __init__(
        self,
        content: Iterator[bytes],
        *,
        closing: ClosingStream,
        stall_seconds: float,
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(
            content,
            background=BackgroundTask(closing.close),
            media_type=media_type,
            headers=headers,
        )
        self.stall_seconds = stall_seconds

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        # Stream.to_asgi_response, building the stall-guarded response instead.
        return _StallGuardedResponse(
            stall_seconds=self.stall_seconds,
            iterator=self.iterator,
            background=self.background or background,
            content_length=0,
            cookies=self.cookies if cookies is None else itertools.chain(self.cookies, cookies),
            encoding=self.encoding,
            headers={**headers, **self.headers} if headers is not None else self.headers,
            is_head_response=is_head_response,
            media_type=get_enum_string_value(media_type or self.media_type or MediaType.JSON),
            status_code=self.status_code or status_code,
        )
