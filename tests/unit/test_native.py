"""Tests for the Rust extension engine._native (native/src) and its wrapper engine.checks.

Pure unit tests: no servers. The extension must be built first (`maturin develop --release`
or `pip install -e .`); the byte-level rules themselves are also unit-tested in Rust
(`cargo test` in native/).
"""

from __future__ import annotations

import re
import struct
import uuid as uuid_mod
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import _native as native
from engine import checks

STRING_TYPES = [pa.string(), pa.large_string(), pa.string_view()]
STRING_TYPE_IDS = ["string", "large_string", "string_view"]

# --------------------------------------------------------------------------- oracles

HEX = "[0-9a-fA-F]"
UUID_RE = re.compile(f"{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}")
SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
EMAIL_LOCAL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
EMAIL_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
TLD_RE = re.compile(r"[A-Za-z]{2,63}")
# Unicode White_Space (what Rust's char::is_whitespace accepts). Python's str.isspace()
# also includes U+001C..U+001F, which the native word_count does not treat as separators.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)
WORD_SPLIT_RE = re.compile(f"[{re.escape(WHITESPACE)}]+")


def oracle_uuid(s: str) -> bool:
    return UUID_RE.fullmatch(s) is not None


def oracle_slug(s: str) -> bool:
    return len(s.encode()) <= 200 and SLUG_RE.fullmatch(s) is not None


def oracle_token_id(s: str, prefix: str, max_len: int) -> bool:
    if max_len < 1:
        return False
    return re.fullmatch(re.escape(prefix) + f"[A-Za-z0-9_-]{{1,{max_len}}}", s) is not None


def oracle_email(s: str) -> bool:
    if len(s.encode()) > 254 or s.count("@") != 1:
        return False
    local, domain = s.split("@")
    labels = domain.split(".")
    return (
        1 <= len(local) <= 64
        and EMAIL_LOCAL_RE.fullmatch(local) is not None
        and 1 <= len(domain) <= 253
        and len(labels) >= 2
        and all(EMAIL_LABEL_RE.fullmatch(label) for label in labels)
        and TLD_RE.fullmatch(labels[-1]) is not None
    )


def oracle_word_count(s: str) -> int:
    return sum(1 for w in WORD_SPLIT_RE.split(s) if w)


# --------------------------------------------------------------------------- tables

U = "123e4567-e89b-12d3-a456-426614174000"
UUID_CASES: list[tuple[str, bool]] = [
    (U, True),
    (U.upper(), True),
    ("123E4567-e89B-12D3-a456-426614174000", True),
    ("00000000-0000-0000-0000-000000000000", True),
    ("ffffffff-ffff-ffff-ffff-ffffffffffff", True),
    ("", False),
    (U.replace("-", ""), False),
    ("{" + U + "}", False),
    ("urn:uuid:" + U, False),
    (U[:-1], False),
    (U + "0", False),
    (" " + U, False),
    (U + "\n", False),
    (U[:-1] + "\x00", False),
    (U[:-1] + "g", False),
    (U.replace("-", "_"), False),
    ("123e4567e-89b-12d3-a456-426614174000", False),
    (U[:-1] + "\u0660", False),  # ARABIC-INDIC DIGIT ZERO
    ("\uff11\uff12\uff13e4567-e89b-12d3-a456-426614174000", False),  # fullwidth digits
    ("-" * 36, False),
]

EMAIL_CASES: list[tuple[str, bool]] = [
    ("a@b.co", True),
    ("user@example.com", True),
    ("USER@EXAMPLE.COM", True),
    ("first.last@sub.example.co.uk", True),
    ("user+tag@example.com", True),
    ("x_y-z@ex-ample.org", True),
    ("!#$%&'*+/=?^_`{|}~-@example.com", True),
    ("a@1.2.xy", True),
    ("a" * 64 + "@example.com", True),
    ("a@" + "b" * 63 + ".com", True),
    ("a@" + ("d" * 60 + ".") * 4 + "abcde.io", True),  # exactly 254
    ("", False),
    ("@", False),
    ("a@", False),
    ("@example.com", False),
    ("plainaddress", False),
    ("a@@example.com", False),
    ("a@b@example.com", False),
    ("a@localhost", False),
    ("a@example.c", False),
    ("a@example.c0m", False),
    ("a@example.123", False),
    ("a@example.com.", False),
    ("a@.example.com", False),
    ("a@example..com", False),
    ("a@-example.com", False),
    ("a@example-.com", False),
    ("a@exa_mple.com", False),
    (".a@example.com", False),
    ("a.@example.com", False),
    ("a..b@example.com", False),
    ("a b@example.com", False),
    (" a@example.com", False),
    ("a@example.com ", False),
    ("a@example.com\n", False),
    ("a\x00@example.com", False),
    ('"a"@example.com', False),
    ("a@[127.0.0.1]", False),
    ("jörg@example.com", False),
    ("a@bücher.de", False),
    ("a\u00a0@example.com", False),
    ("a" * 65 + "@example.com", False),
    ("a@" + "b" * 64 + ".com", False),
    ("xa@" + ("d" * 60 + ".") * 4 + "abcde.io", False),  # 255
]

SLUG_CASES: list[tuple[str, bool]] = [
    ("a", True),
    ("0", True),
    ("hello-world", True),
    ("2024-annual-report", True),
    ("a-b-c-1-2-3", True),
    ("a" * 200, True),
    ("a" * 201, False),
    ("", False),
    ("-", False),
    ("-a", False),
    ("a-", False),
    ("a--b", False),
    ("Hello", False),
    ("hello_world", False),
    ("hello world", False),
    ("hello.world", False),
    ("hello\n", False),
    ("hello\x00", False),
    ("café", False),
    ("\u0430bc", False),  # Cyrillic a
]

TOKEN_CASES: list[tuple[str, bool]] = [
    ("cm_a", True),
    ("cm_abc123", True),
    ("cm_ABC-def_123", True),
    ("cm__", True),
    ("cm_cm_", True),
    ("cm_" + "x" * 64, True),
    ("cm_" + "x" * 65, False),
    ("cm_", False),
    ("cm", False),
    ("", False),
    ("cm-abc", False),
    ("CM_abc", False),
    ("xcm_abc", False),
    (" cm_abc", False),
    ("cm_abc ", False),
    ("cm_ab.c", False),
    ("cm_abc\x00", False),
    ("cm_café", False),
    ("cm_\u0661", False),
]

WORD_CASES: list[tuple[str, int]] = [
    ("", 0),
    (" ", 0),
    (" \t\n\r\x0b\x0c ", 0),
    ("one", 1),
    ("  one  ", 1),
    ("one two", 2),
    ("one  two\tthree\nfour\r\nfive", 5),
    ("a\x00b", 1),
    ("a\x1cb", 1),  # not White_Space (str.split() would say 2)
    ("a\u00a0b", 2),
    ("a\u0085b", 2),
    ("a\u1680b", 2),
    ("a\u2000b\u2005c\u200ad", 4),
    ("a\u200bb", 1),  # ZERO WIDTH SPACE is not whitespace
    ("a\u2028b\u2029c", 3),
    ("a\u202fb\u205fc\u3000d", 4),
    ("\u3000\u3000", 0),
    ("日本語 テキスト", 2),
    ("emoji 🎉🎉 ok", 3),
    ("word " * 10_000, 10_000),
]


def arrow(values: list[str | None], typ: pa.DataType) -> pa.Array:
    return pa.array(values, type=typ)


def expected_with_nulls(cases: list[tuple[str, Any]]) -> tuple[list[str | None], list[Any]]:
    """Interleave a null after every case: values and expected outputs."""
    values: list[str | None] = []
    expected: list[Any] = []
    for value, want in cases:
        values += [value, None]
        expected += [want, None]
    return values, expected


BOOL_FUNCS: list[tuple[str, Callable[[Any], Any], list[tuple[str, bool]]]] = [
    ("is_uuid", native.is_uuid, UUID_CASES),
    ("is_email", native.is_email, EMAIL_CASES),
    ("is_slug", native.is_slug, SLUG_CASES),
    ("is_token_id", lambda a: native.is_token_id(a, "cm_", 64), TOKEN_CASES),
]

ALL_FUNCS: list[tuple[str, Callable[[Any], Any], list[tuple[str, Any]]]] = [
    *BOOL_FUNCS,
    ("word_count", native.word_count, WORD_CASES),  # type: ignore[list-item]
]
FUNC_IDS = [f[0] for f in ALL_FUNCS]


# --------------------------------------------------------------------------- native: tables


@pytest.mark.parametrize("typ", STRING_TYPES, ids=STRING_TYPE_IDS)
@pytest.mark.parametrize(("name", "fn", "cases"), ALL_FUNCS, ids=FUNC_IDS)
def test_native_tables(
    name: str, fn: Callable[[Any], Any], cases: list[Any], typ: pa.DataType
) -> None:
    values, expected = expected_with_nulls(cases)
    result = fn(arrow(values, typ))
    assert isinstance(result, pa.Array)
    assert result.type == (pa.uint32() if name == "word_count" else pa.bool_())
    got = result.to_pylist()
    mismatches = [(v, w, g) for v, w, g in zip(values, expected, got, strict=True) if w != g]
    assert not mismatches
    assert result.null_count == len(cases)


@pytest.mark.parametrize(("value", "want"), UUID_CASES)
def test_is_uuid_single(value: str, want: bool) -> None:
    assert native.is_uuid(pa.array([value])).to_pylist() == [want]
    assert oracle_uuid(value) == want


@pytest.mark.parametrize(("value", "want"), EMAIL_CASES)
def test_is_email_single(value: str, want: bool) -> None:
    assert native.is_email(pa.array([value])).to_pylist() == [want]
    assert oracle_email(value) == want


@pytest.mark.parametrize(("value", "want"), SLUG_CASES)
def test_is_slug_single(value: str, want: bool) -> None:
    assert native.is_slug(pa.array([value])).to_pylist() == [want]
    assert oracle_slug(value) == want


@pytest.mark.parametrize(("value", "want"), TOKEN_CASES)
def test_is_token_id_single(value: str, want: bool) -> None:
    assert native.is_token_id(pa.array([value]), "cm_", 64).to_pylist() == [want]
    assert oracle_token_id(value, "cm_", 64) == want


@pytest.mark.parametrize(("value", "want"), WORD_CASES)
def test_word_count_single(value: str, want: int) -> None:
    assert native.word_count(pa.array([value])).to_pylist() == [want]
    assert oracle_word_count(value) == want


@pytest.mark.parametrize(
    ("value", "prefix", "max_len", "want"),
    [
        ("abc", "", 3, True),
        ("abcd", "", 3, False),
        ("", "", 3, False),
        ("cm_a", "cm_", 0, False),
        ("cm_a", "cm_", 2**62, True),
        ("é\x00:x", "é\x00:", 1, True),
        ("x", "é\x00:", 1, False),
        ("usr_AbC", "usr_", 3, True),
        ("usr_AbCd", "usr_", 3, False),
    ],
)
def test_is_token_id_parameters(value: str, prefix: str, max_len: int, want: bool) -> None:
    assert native.is_token_id(pa.array([value]), prefix, max_len).to_pylist() == [want]


def test_is_token_id_rejects_negative_max_len() -> None:
    with pytest.raises(OverflowError):
        native.is_token_id(pa.array(["cm_a"]), "cm_", -1)
    with pytest.raises(ValueError, match="max_len"):
        checks.is_token_id(pl.Series(["cm_a"]), "cm_", -1)


# --------------------------------------------------------------------------- native: layouts


@pytest.mark.parametrize("typ", STRING_TYPES, ids=STRING_TYPE_IDS)
@pytest.mark.parametrize(("name", "fn", "cases"), ALL_FUNCS, ids=FUNC_IDS)
def test_native_sliced_arrays(
    name: str, fn: Callable[[Any], Any], cases: list[Any], typ: pa.DataType
) -> None:
    """Arrays with a non-zero offset (slices share the parent's buffers)."""
    values, expected = expected_with_nulls(cases)
    full = arrow(values, typ)
    for start in (1, 3, len(values) // 2):
        assert fn(full.slice(start)).to_pylist() == expected[start:]
        assert fn(full.slice(start, 3)).to_pylist() == expected[start : start + 3]


@pytest.mark.parametrize("typ", STRING_TYPES, ids=STRING_TYPE_IDS)
@pytest.mark.parametrize(("name", "fn", "cases"), ALL_FUNCS, ids=FUNC_IDS)
def test_native_empty_and_all_null(
    name: str, fn: Callable[[Any], Any], cases: list[Any], typ: pa.DataType
) -> None:
    out_type = pa.uint32() if name == "word_count" else pa.bool_()
    empty = fn(pa.array([], type=typ))
    assert len(empty) == 0
    assert empty.type == out_type
    nulls = fn(pa.array([None, None, None], type=typ))
    assert nulls.to_pylist() == [None, None, None]
    assert nulls.type == out_type


@pytest.mark.parametrize(("name", "fn", "cases"), ALL_FUNCS, ids=FUNC_IDS)
def test_native_null_typed_array(name: str, fn: Callable[[Any], Any], cases: list[Any]) -> None:
    assert fn(pa.nulls(4)).to_pylist() == [None] * 4


def test_string_view_long_and_inline_values() -> None:
    # string_view stores values <= 12 bytes inline in the view and longer ones in data buffers.
    values = ["ab", "a" * 12, "a" * 13, "hello-world-this-is-long", U, "a@b.co", "x" * 10_000]
    arr = pa.array(values, type=pa.string_view())
    assert native.is_slug(arr).to_pylist() == [oracle_slug(v) for v in values]
    assert native.is_uuid(arr).to_pylist() == [oracle_uuid(v) for v in values]
    assert native.word_count(arr).to_pylist() == [1] * len(values)


def test_polars_to_arrow_inputs() -> None:
    s = pl.Series("x", [U, None, "not-a-uuid"])
    expected = [True, None, False]
    assert native.is_uuid(s.to_arrow()).to_pylist() == expected  # large_string
    newest = s.to_arrow(compat_level=pl.CompatLevel.newest())
    assert newest.type == pa.string_view()
    assert native.is_uuid(newest).to_pylist() == expected


def test_chunked_array_chunks() -> None:
    ca = pa.chunked_array([["cm_a", None], ["bad", "cm_b"]], type=pa.large_string())
    got = [native.is_token_id(c, "cm_", 64).to_pylist() for c in ca.chunks]
    assert got == [[True, None], [False, True]]


def test_result_outlives_input() -> None:
    arr = pa.array(["a b c"] * 1000, type=pa.string_view())
    result = native.word_count(arr)
    del arr
    assert result.to_pylist() == [3] * 1000


# --------------------------------------------------------------------------- native: errors


@pytest.mark.parametrize(
    "bad",
    [
        pa.array([1, 2, 3]),
        pa.array([b"abc"], type=pa.binary()),
        pa.array(["a", "b"]).dictionary_encode(),
        pa.array([["a"]]),
    ],
    ids=["int64", "binary", "dictionary", "list"],
)
@pytest.mark.parametrize(("name", "fn", "cases"), ALL_FUNCS, ids=FUNC_IDS)
def test_unsupported_arrow_types(
    name: str, fn: Callable[[Any], Any], cases: list[Any], bad: pa.Array
) -> None:
    with pytest.raises(native.NativeError, match=r"unsupported Arrow type .*string_view"):
        fn(bad)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("abc", "builtins.str"),
        (["a"], "builtins.list"),
        (None, "NoneType"),
        (pa.chunked_array([["a"]]), "__arrow_c_stream__"),
        (pl.Series(["a"]), "__arrow_c_stream__"),
    ],
    ids=["str", "list", "None", "ChunkedArray", "polars-Series"],
)
def test_non_arrow_inputs(obj: object, message: str) -> None:
    with pytest.raises(native.NativeError, match=re.escape(message)):
        native.is_uuid(obj)  # type: ignore[arg-type]


def test_bad_capsule_exporters() -> None:
    class NotATuple:
        def __arrow_c_array__(self, requested_schema: object = None) -> object:
            return 42

    class Raises:
        def __arrow_c_array__(self, requested_schema: object = None) -> object:
            raise RuntimeError("boom")

    class SwappedCapsules:
        def __arrow_c_array__(self, requested_schema: object = None) -> object:
            schema, array = pa.array(["a"]).__arrow_c_array__()
            return array, schema

    with pytest.raises(native.NativeError, match="pair of capsules"):
        native.is_uuid(NotATuple())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="boom"):
        native.is_uuid(Raises())  # type: ignore[arg-type]
    with pytest.raises(native.NativeError, match='bad "arrow_schema" capsule'):
        native.is_uuid(SwappedCapsules())  # type: ignore[arg-type]


def test_native_error_is_exception_subclass() -> None:
    assert issubclass(native.NativeError, Exception)
    assert checks.NativeError is native.NativeError


def test_malformed_offsets_and_views_do_not_crash() -> None:
    """Offsets/views pointing outside their data read as empty values instead of panicking."""
    data = pa.py_buffer(b"abcde")
    decreasing = pa.py_buffer(struct.pack("<4i", 0, 5, 2, 3))
    arr = pa.Array.from_buffers(pa.string(), 3, [None, decreasing, data])
    assert native.word_count(arr).to_pylist() == [0, 0, 1]
    negative = pa.py_buffer(struct.pack("<3i", 0, -1, 3))
    arr = pa.Array.from_buffers(pa.string(), 2, [None, negative, data])
    assert native.word_count(arr).to_pylist() == [0, 0]
    views = (
        struct.pack("<I4sII", 20, b"abcd", 7, 0)  # buffer index out of range
        + struct.pack("<I4sII", 20, b"abcd", 0, 1000)  # offset out of range
        + struct.pack("<I12s", 3, b"xy z" + bytes(8))  # inline "xy "
    )
    arr = pa.Array.from_buffers(
        pa.string_view(), 3, [None, pa.py_buffer(views), pa.py_buffer(b"hello world and more!")]
    )
    assert native.word_count(arr).to_pylist() == [0, 0, 1]
    assert native.is_slug(arr).to_pylist() == [False, False, False]


def test_invalid_utf8_does_not_crash() -> None:
    raw = [b"\xff\xfe a", b"\xe2\x80 b", b"a\xc2", b"\xc2\xa0\xc2", b"\xf0\xe2\x80\x80x", b"\x80"]
    arr = pa.array(raw, type=pa.binary()).view(pa.string())
    want = [oracle_word_count(r.decode("utf-8", "replace")) for r in raw]
    assert native.word_count(arr).to_pylist() == want
    for fn in (native.is_uuid, native.is_email, native.is_slug):
        assert fn(arr).to_pylist() == [False] * len(raw)


# --------------------------------------------------------------------------- fuzz

# Text without surrogates (they cannot be encoded as UTF-8), NUL and whitespace included.
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=80)
huge_text = st.builds(
    lambda piece, n: piece * n,
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=100_000),
)
near_uuid = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.from_regex(UUID_RE, fullmatch=True),
)
near_slug = st.from_regex(SLUG_RE, fullmatch=True)
near_token = st.from_regex(re.compile(r"cm_[A-Za-z0-9_-]{0,70}"), fullmatch=True)
near_email = st.emails()


def mutate(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid-looking values with one character replaced, inserted or deleted."""

    @st.composite
    def _mutate(draw: st.DrawFn) -> str:
        s = draw(values)
        i = draw(st.integers(min_value=0, max_value=len(s)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        c = draw(st.sampled_from(["-", "_", ".", "@", " ", "\x00", "A", "g", "0", "é", "\u3000"]))
        if op == "insert" or i == len(s):
            return s[:i] + c + s[i:]
        if op == "replace":
            return s[:i] + c + s[i + 1 :]
        return s[:i] + s[i + 1 :]

    return _mutate()


fuzz_value = st.one_of(
    any_text,
    ascii_text,
    near_uuid,
    near_slug,
    near_token,
    near_email,
    mutate(st.one_of(near_uuid, near_slug, near_token, near_email)),
    st.none(),
)
fuzz_values = st.lists(fuzz_value, max_size=30)


def _apply_oracle(values: list[str | None], f: Callable[[str], Any]) -> list[Any]:
    return [None if v is None else f(v) for v in values]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=fuzz_values,
    typ=st.sampled_from(STRING_TYPES),
    prefix=st.one_of(st.just("cm_"), st.text(max_size=4)),
    max_len=st.integers(min_value=0, max_value=80),
)
def test_fuzz_agrees_with_oracles(
    values: list[str | None], typ: pa.DataType, prefix: str, max_len: int
) -> None:
    arr = pa.array(values, type=typ)
    assert native.is_uuid(arr).to_pylist() == _apply_oracle(values, oracle_uuid)
    assert native.is_slug(arr).to_pylist() == _apply_oracle(values, oracle_slug)
    assert native.is_email(arr).to_pylist() == _apply_oracle(values, oracle_email)
    assert native.word_count(arr).to_pylist() == _apply_oracle(values, oracle_word_count)
    assert native.is_token_id(arr, "cm_", 64).to_pylist() == _apply_oracle(
        values, lambda v: oracle_token_id(v, "cm_", 64)
    )
    assert native.is_token_id(arr, prefix, max_len).to_pylist() == _apply_oracle(
        values, lambda v: oracle_token_id(v, prefix, max_len)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.one_of(huge_text, any_text, st.none()), max_size=5),
    typ=st.sampled_from(STRING_TYPES),
)
def test_fuzz_huge_values_never_raise(values: list[str | None], typ: pa.DataType) -> None:
    arr = pa.array(values, type=typ)
    for fn in (native.is_uuid, native.is_email, native.is_slug):
        assert len(fn(arr)) == len(values)
    assert native.is_token_id(arr, "cm_", 64).to_pylist() == _apply_oracle(
        values, lambda v: oracle_token_id(v, "cm_", 64)
    )
    assert native.word_count(arr).to_pylist() == _apply_oracle(values, oracle_word_count)


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(st.one_of(st.binary(max_size=40), st.none()), max_size=20))
def test_fuzz_invalid_utf8_never_raises(raw: list[bytes | None]) -> None:
    # .view() reinterprets the bytes without UTF-8 validation.
    arr = pa.array(raw, type=pa.binary()).view(pa.string())
    assert native.word_count(arr).to_pylist() == [
        None if r is None else oracle_word_count(r.decode("utf-8", "replace")) for r in raw
    ]
    for fn in (native.is_uuid, native.is_email, native.is_slug):
        assert len(fn(arr)) == len(raw)


def test_uuid_oracle_sanity() -> None:
    assert oracle_uuid(str(uuid_mod.uuid4()))
