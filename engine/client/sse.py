"""Server-Sent Events as the WHATWG HTML standard frames them: ``field: value`` lines, ``data``
lines joined by newlines, ``:`` comments (the API's keep-alives), an empty line dispatches."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One job event of ``GET /v1/jobs/{id}/events``: ``seq`` (the SSE id), ``type`` and the
    event's JSON body (``{seq, type, created, data}``)."""

    seq: int
    type: str
    body: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        data = self.body.get("data")
        return data if isinstance(data, dict) else {}


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a stream's lines (without their line ends), as they arrive; events
    without an id or with a body that is not a JSON object are skipped."""
    last_id: str | None = None
    event_type = ""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data and last_id is not None and last_id.isdigit():
                try:
                    body = json.loads("\n".join(data))
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    yield Event(int(last_id), event_type or str(body.get("type", "message")), body)
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\x00" not in value:
            last_id = value
