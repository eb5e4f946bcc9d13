"""Validation rules per column and across columns — tables of input → expected (field, code)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from engine.formats.reader import LINE, ROW
from engine.imports.validate import parse_tags, parse_timestamps, validate
from engine.resources import catalog

RES = catalog()
UID = "3f2b8c1e-7d4a-4e2b-9c1d-2a3b4c5d6e7f"
GOOD = {
    "users": {
        "id": UID,
        "email": "a@example.com",
        "name": "Ann",
        "role": "admin",
        "active": "true",
        "created_at": "2024-03-01T12:00:00Z",
        "updated_at": None,
    },
    "articles": {
        "id": UID,
        "slug": "hello-world",
        "title": "T",
        "body": "B",
        "author_id": UID,
        "tags": '["a","b"]',
        "status": "published",
        "published_at": "2024-03-01T12:00:00Z",
        "created_at": "2024-03-01T12:00:00Z",
    },
    "comments": {
        "id": "cm_abc-1",
        "article_id": UID,
        "user_id": UID,
        "body": "nice",
        "created_at": "2024-03-01",
    },
}


def frame(resource: str, changes: dict) -> pl.DataFrame:
    rec = {**GOOD[resource], **changes}
    return pl.DataFrame({k: pl.Series([v], dtype=pl.String) for k, v in rec.items()}).with_columns(
        pl.lit(1, dtype=pl.Int64).alias(ROW), pl.lit(2, dtype=pl.Int64).alias(LINE)
    )


@pytest.mark.parametrize(
    ("resource", "changes", "expected"),
    [
        ("users", {}, []),
        ("users", {"id": None}, []),  # matched by email later, in SQL
        ("users", {"email": "not-an-email"}, [("email", "invalid_format")]),
        ("users", {"email": "  "}, [("email", "required")]),
        ("users", {"name": None}, [("name", "required")]),
        ("users", {"role": "superuser"}, [("role", "invalid_value")]),
        ("users", {"role": "Admin"}, []),
        ("users", {"active": "maybe"}, [("active", "invalid_format")]),
        ("users", {"active": "FALSE"}, []),
        ("users", {"active": None}, []),
        ("users", {"created_at": "2024-13-45"}, [("created_at", "invalid_format")]),
        ("users", {"created_at": "yesterday"}, [("created_at", "invalid_format")]),
        ("users", {"created_at": None}, [("created_at", "required")]),
        (
            "users",
            {"id": "not-a-uuid", "role": "x"},
            [("id", "invalid_format"), ("role", "invalid_value")],
        ),
        ("articles", {}, []),
        ("articles", {"slug": "Hello World!"}, [("slug", "invalid_format")]),
        ("articles", {"status": "draft"}, [("published_at", "invalid_value")]),
        ("articles", {"status": "draft", "published_at": None}, []),
        ("articles", {"status": "archived"}, [("status", "invalid_value")]),
        ("articles", {"tags": "a|b"}, []),
        ("articles", {"tags": "a||b"}, [("tags", "invalid_format")]),
        ("articles", {"tags": '["a", 1]'}, [("tags", "invalid_format")]),
        ("articles", {"tags": None}, []),
        ("articles", {"author_id": None}, [("author_id", "required")]),
        ("comments", {}, []),
        ("comments", {"id": UID}, []),
        ("comments", {"id": "cm_"}, [("id", "invalid_format")]),
        ("comments", {"id": None}, [("id", "required")]),
        ("comments", {"body": ""}, [("body", "required")]),
        ("comments", {"body": "word " * 501}, [("body", "too_long")]),
        ("comments", {"body": "word " * 500}, []),
    ],
)
def test_rules(resource, changes, expected):
    out = validate(frame(resource, changes), RES[resource])
    got = [(e["field"], e["code"]) for e in out.errors.to_dicts()]
    assert got == expected
    assert out.valid.height == (0 if expected else 1)
    for e in out.errors.to_dicts():
        assert (e["row"], e["line"]) == (1, 2)
        assert e["message"]


def test_valid_rows_are_typed():
    out = validate(frame("articles", {"tags": "x|y", "id": UID.upper()}), RES["articles"])
    row = out.valid.to_dicts()[0]
    assert row["tags"] == ["x", "y"]
    assert row["id"] == UID
    assert row["created_at"] == dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)


def test_timestamps_accept_offsets_fractions_and_dates():
    got = parse_timestamps(
        pl.Series(
            [
                "2024-03-01T12:00:00+02:00",
                "2024-03-01T12:00:00.5Z",
                "2024-03-01T12:00:00",
                "2024-03-01",
                "2024-02-30",
            ]
        )
    )
    assert got.to_list() == [
        dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 1, 12, 0, 0, 500000, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
        None,
    ]


def test_tags_forms():
    tags, ok = parse_tags(pl.Series(['["a","b\\"c"]', "x|y", "", "[]", '["a",""]', "[broken"]))
    assert tags.to_list()[:4] == [["a", 'b"c'], ["x", "y"], [], []]
    assert ok.to_list() == [True, True, True, True, False, False]


def test_tags_with_control_characters_decode():
    tags, ok = parse_tags(pl.Series(['["\x14u", "a\tb"]', '["x"]']))
    assert tags.to_list() == [["\x14u", "a\tb"], ["x"]]
    assert ok.to_list() == [True, True]


def test_tags_that_polars_cannot_decode_are_rejected_not_fatal():
    # polars re-serialises NDJSON arrays without escaping a backslash: '["\\ò"]' with one
    # backslash is invalid JSON; it must become an invalid_format row, not fail the batch.
    tags, ok = parse_tags(pl.Series(['["\\ò"]', '["fine"]']))
    assert tags.to_list()[1] == ["fine"]
    assert ok.to_list() == [False, True]
