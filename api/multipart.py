"""A streaming ``multipart/form-data`` reader over an ASGI body stream.

Litestar's own form parsing collects the body first; uploads here are gigabytes, so parts are
handed out as they arrive and a file part's bytes flow straight on to object storage.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header


class MultipartError(ValueError):
    """Raised when the body is not well-formed multipart/form-data."""


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise MultipartError("expected multipart/form-data with a boundary")
    boundary = params[b"boundary"]
    if not 1 <= len(boundary) <= 70:  # RFC 2046
        raise MultipartError("the multipart boundary must be 1-70 characters")
    return boundary


class StreamingForm:
    def __init__(self, body: AsyncIterator[bytes], boundary: bytes) -> None:
        self._body = body
        self._events: deque[tuple[str, Any]] = deque()
        self._done = False

        def push(kind: str) -> Any:
            return lambda: self._events.append((kind, None))

        def push_data(kind: str) -> Any:
            return lambda data, start, end: self._events.append((kind, bytes(data[start:end])))

        self._parser = MultipartParser(
            boundary,
            callbacks={  # type: ignore[arg-type]
                "on_part_begin": push("begin"),
                "on_part_data": push_data("data"),
                "on_part_end": push("part_end"),
                "on_header_field": push_data("hfield"),
                "on_header_value": push_data("hvalue"),
                "on_header_end": push("hend"),
                "on_headers_finished": push("hdone"),
                "on_end": push("end"),
            },
        )

    async def _next(self) -> tuple[str, Any]:
        while not self._events:
            if self._done:
                raise MultipartError("the multipart body ended before its closing boundary")
            try:
                chunk = await self._body.__anext__()
            except StopAsyncIteration:
                self._done = True
                self._parser.finalize()
                continue
            try:
                self._parser.write(chunk)
            except Exception as exc:  # python-multipart raises its own error types
                raise MultipartError(f"malformed multipart body: {exc}") from exc
        return self._events.popleft()

    async def parts(self) -> AsyncIterator[tuple[Part, AsyncIterator[bytes]]]:
        """Yield (part, its data). Consume a part's data before asking for the next part."""
        while True:
            kind, _ = await self._next()
            if kind == "end":
                return
            if kind != "begin":
                continue
            headers: dict[str, str] = {}
            field, value = b"", b""
            while True:
                kind, data = await self._next()
                if kind == "hfield":
                    field += data
                elif kind == "hvalue":
                    value += data
                elif kind == "hend":
                    headers[field.decode("latin-1").lower()] = value.decode("utf-8", "replace")
                    field, value = b"", b""
                elif kind == "hdone":
                    break
            try:
                _, params = parse_options_header(
                    headers.get("content-disposition", "").encode("utf-8", "surrogateescape")
                )
            except (ValueError, UnicodeError) as exc:
                raise MultipartError(f"unreadable Content-Disposition header: {exc}") from exc
            name = params.get(b"name", b"").decode("utf-8", "replace")
            raw_filename = params.get(b"filename")
            part = Part(
                name,
                raw_filename.decode("utf-8", "replace") if raw_filename is not None else None,
                headers.get("content-type"),
            )
            finished = False

            async def data_of() -> AsyncIterator[bytes]:
                nonlocal finished
                while True:
                    kind, data = await self._next()
                    if kind == "data":
                        if data:
                            yield data
                    elif kind == "part_end":
                        finished = True
                        return

            stream = data_of()
            yield part, stream
            if not finished:
                async for _ in stream:
                    pass
