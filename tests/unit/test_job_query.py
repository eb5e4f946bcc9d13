"""The pieces of GET /v1/jobs and /v1/jobs/{id}/events that need no server: the opaque cursor,
the list's filter and parameter checks, Accept negotiation and the SSE wire format."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from api.events import sse, wants_stream
from api.job_query import (
    CURSOR_PATTERN,
    decode_cursor,
    encode_cursor,
    job_filter,
    limit,
    next_link,
    only_known,
    timestamp,
)
from api.problems import Problem
from engine.auth import Principal
from engine.events import Event
from engine.job_list import JobFilter, Position


def _principal(*scopes: str, owner: str = "ann") -> Principal:
    return Principal("t1", owner, frozenset(scopes), None, None)


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 11, 30, 9, 14, 3, 123456, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 11, 30, 10, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
def test_a_cursor_round_trips_to_the_microsecond(when: datetime) -> None:
    position = Position(when, uuid.uuid4())
    text = encode_cursor(position)
    assert re.fullmatch(CURSOR_PATTERN, text)
    assert decode_cursor(text) == position


def test_any_well_formed_cursor_decodes_and_far_times_are_clamped() -> None:
    low = decode_cursor("_" * 32)  # -1 µs
    assert low.created_at == datetime(1970, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)
    high = decode_cursor("f" + "_" * 31)  # a time past year 9999
    assert high.created_at.year == 9999
    lowest = decode_cursor("g" + "A" * 31)  # a time before year 1
    assert lowest.created_at.year == 1


@pytest.mark.parametrize(
    "text", ["", "abc", "A" * 31 + "=", "A" * 33, "A" * 31 + "+", "A" * 32 + "\n"]
)
def test_a_malformed_cursor_is_a_400_naming_it(text: str) -> None:
    with pytest.raises(Problem) as caught:
        decode_cursor(text)
    assert caught.value.status_code == 400 and str(caught.value.detail).startswith("cursor")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-01T12:00:00Z", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),
        ("2024-03-01T13:00:00+01:00", datetime(2024, 3, 1, 12, tzinfo=UTC)),
    ],
)
def test_timestamps_are_iso_8601_and_utc_without_an_offset(raw: str, expected: datetime) -> None:
    assert timestamp("created_after", raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [(None, 20), ("", 20), ("1", 1), (" 100 ", 100)])
def test_limit_defaults_and_bounds(raw: str | None, expected: int) -> None:
    assert limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "101", "-1", "1.5", "ten", "²"])
def test_a_bad_limit_is_a_400_naming_it(raw: str) -> None:
    with pytest.raises(Problem) as caught:
        limit(raw)
    assert str(caught.value.detail).startswith("limit")


RESOURCES = ("users", "articles", "comments")


def test_an_owner_sees_their_jobs_of_the_kinds_they_may_read() -> None:
    both = job_filter(_principal("imports:read", "exports:read"), RESOURCES, {})
    assert both == JobFilter(owner="ann", kinds=None)
    imports = job_filter(_principal("imports:read", "exports:write"), RESOURCES, {})
    assert imports == JobFilter(owner="ann", kinds=("import",))
    admin = job_filter(_principal("admin"), RESOURCES, {"owner": "bob", "status": "failed"})
    assert admin == JobFilter(owner="bob", kinds=None, status="failed")
    assert job_filter(_principal("admin"), RESOURCES, {}).owner is None


@pytest.mark.parametrize(
    ("scopes", "query", "status", "named"),
    [
        (("imports:read",), {"kind": "export"}, 403, "this token lacks the 'exports:read'"),
        (("imports:write",), {}, 403, "this token lacks"),
        (("imports:read",), {"owner": "bob"}, 403, "only an admin"),
        (("admin",), {"kind": "imports"}, 400, "kind"),
        (("admin",), {"resource": "orders"}, 400, "resource"),
        (("admin",), {"status": "done"}, 400, "status"),
        (("admin",), {"created_before": "soon"}, 400, "created_before"),
        (("admin",), {"owner": "a\x00b"}, 400, "owner"),
    ],
)
def test_filters_refused(
    scopes: tuple[str, ...], query: dict[str, str], status: int, named: str
) -> None:
    with pytest.raises(Problem) as caught:
        job_filter(_principal(*scopes), RESOURCES, query)
    assert caught.value.status_code == status
    assert str(caught.value.detail).startswith(named)


def test_unknown_parameters_are_named() -> None:
    only_known({"kind": "x", "limit": "2"}, ("kind", "limit"))
    with pytest.raises(Problem, match="unknown query parameter 'stauts'"):
        only_known({"stauts": "failed"}, ("status",))


def test_the_next_link_keeps_the_filters_and_replaces_cursor_and_limit() -> None:
    link = next_link("http://h", {"kind": "import", "owner": None, "cursor": "old"}, "NEW", 5)
    assert link == "http://h/v1/jobs?kind=import&limit=5&cursor=NEW"


@pytest.mark.parametrize(
    ("accept", "stream"),
    [
        (None, False),
        ("application/json", False),
        ("text/event-stream", True),
        ("text/html, Text/Event-Stream;q=0.9", True),
        ("text/event-streams", False),
    ],
)
def test_accept_negotiation(accept: str | None, stream: bool) -> None:
    assert wants_stream(accept) is stream


def test_an_event_on_the_wire_is_id_event_and_one_line_of_json() -> None:
    created = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    data = {"message": "line one\nline two"}
    wire = sse(Event(7, "warning", data, created)).decode()
    assert wire.endswith("\n\n") and wire.count("\n") == 4
    fields = dict(line.split(": ", 1) for line in wire.strip().split("\n"))
    assert fields["id"] == "7" and fields["event"] == "warning"
    assert json.loads(fields["data"]) == {
        "seq": 7,
        "type": "warning",
        "created": "2026-11-30T09:00:00Z",
        "data": data,
    }
