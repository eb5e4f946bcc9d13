"""Bounded hypothesis fuzzing of the NDJSON and JSON-array readers against an oracle — no
servers: any JSON values (objects, non-objects, nesting past the cap), blank lines, indentation
and escapes give exactly the oracle's rows and error rows.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.errors import FileError
from engine.formats.parse import MAX_JSON_DEPTH
from tests.support.readers import COLS, FUZZ, check_numbering, outcome, read

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = st.sampled_from([*COLS, "extra", "zz"])


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


RECORDS = st.one_of(
    st.dictionaries(KEYS, VALUES | st.text(max_size=8), max_size=5).map(lambda d: ("object", d)),
    st.dictionaries(KEYS, VALUES, max_size=5).map(lambda d: ("object", d)),
    (SCALARS | st.lists(SCALARS, max_size=3)).map(lambda v: ("other", v)),
    st.integers(MAX_JSON_DEPTH, MAX_JSON_DEPTH + 3).map(lambda n: ("deep", {"id": _deep(n)})),
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _expected_json(value: Any) -> str:
    if not isinstance(value, dict):
        return "other"
    return "deep" if _depth(value) > MAX_JSON_DEPTH else "object"


@st.composite
def json_files(draw: st.DrawFn, array: bool) -> tuple[bytes, list[tuple[str, int, Any]]]:
    records = draw(st.lists(RECORDS, max_size=15))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    indent = draw(st.sampled_from([None, 1])) if array else None
    ascii_only = draw(st.booleans())
    out = "[" + draw(st.sampled_from(["", "\n", " "])) if array else ""
    expected = []
    for i, (_, value) in enumerate(records):
        if array and i:
            out += draw(st.sampled_from([",", ", ", ",\n", "\n,"]))
        elif not array and draw(st.booleans()):
            out += draw(st.sampled_from(["", " ", "\t"])) + eol  # a blank line
        expected.append((_expected_json(value), out.count("\n") + 1, value))
        out += json.dumps(value, indent=indent, ensure_ascii=ascii_only)
        out += "" if array else eol
    out += "\n]" if array else ""
    return out.encode(), expected


def _check_json(
    data: bytes, fmt: str, expected: list[tuple[str, int, Any]], batch_rows: int
) -> None:
    try:
        batches = read(data, fmt, batch_rows=batch_rows, record_cap=10**6)
    except FileError as exc:
        assert not expected and "no records" in str(exc)
        return
    check_numbering(batches, data)
    rows, errors = outcome(batches)
    numbered = list(enumerate(expected, start=1))
    assert [(r["__row"], r["__line"]) for r in rows] == [
        (i, e[1]) for i, e in numbered if e[0] == "object"
    ]
    assert [(e[0], e[1]) for e in errors] == [(i, e[1]) for i, e in numbered if e[0] != "object"]
    for got, (_, _, want) in zip(rows, [e for e in expected if e[0] == "object"], strict=True):
        for c in COLS:
            if want.get(c) is None or isinstance(want[c], str):
                assert got[c] == want.get(c), (c, got, want)
            else:
                assert got[c] is not None
    for (_, _, _, message), (kind, _, _) in zip(
        errors, [e for e in expected if e[0] != "object"], strict=True
    ):
        assert ("levels deep" in message) == (kind == "deep"), message


@FUZZ
@given(file=json_files(array=False), batch_rows=st.integers(1, 6))
def test_ndjson_oracle(file: tuple[bytes, list[Any]], batch_rows: int) -> None:
    _check_json(*file[:1], "ndjson", file[1], batch_rows)


@FUZZ
@given(file=json_files(array=True), batch_rows=st.integers(1, 6))
def test_json_array_oracle(file: tuple[bytes, list[Any]], batch_rows: int) -> None:
    _check_json(*file[:1], "json", file[1], batch_rows)
