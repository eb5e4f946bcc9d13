"""Tests for engine.checks: the polars-Series wrapper around engine._native."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import checks

U = "123e4567-e89b-12d3-a456-426614174000"

# (function, values, expected) with the function applied through engine.checks.
CASES: list[
    tuple[str, Callable[[pl.Series], pl.Series], list[str | None], list[Any], pl.DataType]
] = [
    (
        "is_uuid",
        checks.is_uuid,
        [U, None, U.upper(), "nope", ""],
        [True, None, True, False, False],
        pl.Boolean(),
    ),
    (
        "is_email",
        checks.is_email,
        ["a@b.co", None, "a@b", "x y@z.io", "user+tag@example.com"],
        [True, None, False, False, True],
        pl.Boolean(),
    ),
    (
        "is_slug",
        checks.is_slug,
        ["a-b", None, "A-b", "-a", "x1"],
        [True, None, False, False, True],
        pl.Boolean(),
    ),
    (
        "is_token_id",
        lambda s: checks.is_token_id(s, "cm_", 64),
        ["cm_a", None, "cm_", "cm_" + "x" * 65, "cm_a-b_C"],
        [True, None, False, False, True],
        pl.Boolean(),
    ),
    (
        "word_count",
        checks.word_count,
        ["a b", None, "", " x\u00a0y\u3000z ", "one"],
        [2, None, 0, 3, 1],
        pl.UInt32(),
    ),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "fn", "values", "expected", "dtype"), CASES, ids=IDS)
def test_series_in_series_out(
    name: str,
    fn: Callable[[pl.Series], pl.Series],
    values: list[Any],
    expected: list[Any],
    dtype: pl.DataType,
) -> None:
    s = pl.Series("col", values, dtype=pl.String)
    out = fn(s)
    assert isinstance(out, pl.Series)
    assert out.name == "col"
    assert out.dtype == dtype
    assert out.to_list() == expected


@pytest.mark.parametrize(("name", "fn", "values", "expected", "dtype"), CASES, ids=IDS)
def test_chunked_series(
    name: str,
    fn: Callable[[pl.Series], pl.Series],
    values: list[Any],
    expected: list[Any],
    dtype: pl.DataType,
) -> None:
    parts = [
        pl.Series("c", values[:2], dtype=pl.String),
        pl.Series("c", values[2:], dtype=pl.String),
    ]
    s = pl.concat([*parts, *parts], rechunk=False)
    assert s.n_chunks() > 1
    out = fn(s)
    assert out.name == "c"
    assert out.dtype == dtype
    assert out.to_list() == expected + expected
    # A slice of a chunked series (offsets inside the chunks).
    assert fn(s.slice(1, len(values))).to_list() == (expected + expected)[1 : 1 + len(values)]


@pytest.mark.parametrize(("name", "fn", "values", "expected", "dtype"), CASES, ids=IDS)
def test_empty_and_null_series(
    name: str,
    fn: Callable[[pl.Series], pl.Series],
    values: list[Any],
    expected: list[Any],
    dtype: pl.DataType,
) -> None:
    empty = fn(pl.Series("e", [], dtype=pl.String))
    assert (empty.name, empty.dtype, len(empty)) == ("e", dtype, 0)
    nulls = fn(pl.Series("n", [None, None]))  # dtype Null
    assert (nulls.name, nulls.dtype, nulls.to_list()) == ("n", dtype, [None, None])
    all_null_str = fn(pl.Series("n", [None, None], dtype=pl.String))
    assert all_null_str.to_list() == [None, None]


def test_categorical_and_enum_are_cast() -> None:
    values = ["a-b", "A", None]
    assert checks.is_slug(pl.Series("c", values, dtype=pl.Categorical)).to_list() == [
        True,
        False,
        None,
    ]
    enum = pl.Enum(["a-b", "A"])
    assert checks.is_slug(pl.Series("c", values, dtype=enum)).to_list() == [True, False, None]


@pytest.mark.parametrize(
    "series", [pl.Series("i", [1, 2]), pl.Series("b", [b"x"]), pl.Series("l", [["a"]])]
)
def test_non_string_series_rejected(series: pl.Series) -> None:
    with pytest.raises(TypeError, match=f"{series.name!r}"):
        checks.is_uuid(series)


def test_non_series_rejected() -> None:
    with pytest.raises(TypeError, match="polars Series"):
        checks.is_uuid(["a"])  # type: ignore[arg-type]


def test_large_series_roundtrip() -> None:
    n = 200_000
    s = pl.Series("u", [U, "x", None, "cm_1"] * (n // 4))
    out = checks.is_uuid(s)
    assert len(out) == n
    assert out.sum() == n // 4
    assert out.null_count() == n // 4
    assert checks.is_token_id(s, "cm_", 64).sum() == n // 4


def test_usable_in_expressions_like_validate() -> None:
    s = pl.Series("id", [U.upper(), "cm_x", "bad", None])
    bad = ~(checks.is_uuid(s) | checks.is_token_id(s, "cm_", 64))
    assert bad.to_list() == [False, False, True, None]
    lowered = pl.select(
        pl.when(checks.is_uuid(s)).then(s.str.to_lowercase()).otherwise(s)
    ).to_series()
    assert lowered.to_list() == [U, "cm_x", "bad", None]


def test_all_exports() -> None:
    assert set(checks.__all__) == {
        "NativeError",
        "is_email",
        "is_slug",
        "is_token_id",
        "is_uuid",
        "utf8_error_offset",
        "word_count",
    }
    for name in checks.__all__:
        assert hasattr(checks, name)


# ---------------------------------------------------------------- utf8_error_offset


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"", None),
        (b"plain ascii\n", None),
        ("h\u00e9llo \u4e16\u754c \U0001f600".encode(), None),
        (b"ab\xffcd", 2),  # never valid in UTF-8
        (b"caf\xc3", 3),  # a truncated two-byte sequence at the end
        (b"x\xc3(", 1),  # a lead byte without its continuation
        (b"\xed\xa0\x80", 0),  # an encoded surrogate
        (b"\xc0\xaf", 0),  # an overlong encoding of '/'
        ("\ufeffid,email".encode("utf-16"), 0),  # UTF-16 with its byte-order mark
    ],
)
def test_utf8_error_offset_agrees_with_python(data: bytes, offset: int | None) -> None:
    assert checks.utf8_error_offset(data) == offset
    try:
        data.decode("utf-8")
        python = None
    except UnicodeDecodeError as exc:
        python = exc.start
    assert python == offset


@given(st.binary(max_size=64) | st.text(max_size=32).map(str.encode))
def test_utf8_error_offset_matches_python_on_any_bytes(data: bytes) -> None:
    try:
        data.decode("utf-8")
        expected = None
    except UnicodeDecodeError as exc:
        expected = exc.start
    assert checks.utf8_error_offset(data) == expected
