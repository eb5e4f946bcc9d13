"""A small Server-Sent Events client over httpx, written from the WHATWG wire format (not the
code under test): fields ``id``, ``event``, ``data`` (lines joined by newlines), comments, an
empty line ends an event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["Message", "events", "messages", "open_stream"]


@dataclass(frozen=True)
class Message:
    """One dispatched event, or a comment (``comment`` set, the rest empty)."""

    id: str | None = None
    event: str = "message"
    data: str = ""
    comment: str | None = None

    @property
    def seq(self) -> int:
        assert self.id is not None, self
        return int(self.id)

    def json(self) -> dict[str, Any]:
        return json.loads(self.data)  # type: ignore[no-any-return]


def messages(response: httpx.Response) -> Iterator[Message]:
    """The messages of a streaming response, as they arrive."""
    fields: dict[str, list[str]] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield Message(
                    id=fields["id"][-1] if "id" in fields else None,
                    event=fields["event"][-1] if "event" in fields else "message",
                    data="\n".join(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            yield Message(comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)


def events(response: httpx.Response) -> Iterator[Message]:
    """Only the events (no comments)."""
    return (m for m in messages(response) if m.comment is None)


def open_stream(
    client: httpx.Client, path: str, *, last_event_id: int | None = None, **params: Any
) -> Any:
    """``client.stream(...)`` of ``path`` as an EventSource would ask for it."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return client.stream("GET", path, headers=headers, params=params or None)
