"""Hostile input for the readers and the validator — no servers.

Two halves:

* a table of hostile files (issue #5: encodings, NUL, BOMs, line endings, quotes, empty and
  header-only files, duplicate or unknown names, non-objects, nesting and field caps), each
  with the one precise outcome it must give: error rows (row, line, code, message) or a
  ``FileError`` naming the problem;
* bounded hypothesis fuzzing of ``read_batches`` (random bytes, mutated files and structured
  CSV / NDJSON / JSON with an oracle) and of ``validate`` over whatever the readers produce
  (which drives the native checks with hostile strings). The properties: nothing but
  ``FileError`` escapes; every record is numbered once (a row or an error row, never both);
  row and line numbers increase; results do not depend on chunking; resuming from any
  checkpoint gives the remaining batches exactly; no NUL reaches a valid row.

The native module is also fuzzed directly against oracles in ``test_native.py``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Sequence
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from engine.errors import FileError, InvalidEncoding, MissingColumns, RecordTooLarge
from engine.formats.parse import MAX_FIELDS, MAX_JSON_DEPTH
from engine.formats.reader import Batch, Header, Position, read_batches
from engine.imports.validate import validate
from engine.resources import catalog

COLS = ("id", "name", "x")
USERS = catalog()["users"]
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def read(
    data: bytes,
    fmt: str,
    *,
    columns: Sequence[str] = COLS,
    required: Sequence[str] = ("id",),
    batch_rows: int = 1000,
    chunk: int = 7,
    start: Position | None = None,
    record_cap: int = 4096,
    headers: list[Header] | None = None,
) -> list[Batch]:
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    return list(
        read_batches(
            chunks,
            fmt,
            columns,
            list(required) if fmt == "csv" else [],
            batch_rows=batch_rows,
            max_record_bytes=record_cap,
            max_decompressed_bytes=10**8,
            start=start,
            header_out=headers,
        )
    )


def outcome(batches: list[Batch]) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    rows = [r for b in batches for r in b.frame.to_dicts()]
    errors = [
        (e["row"], e["line"], e["code"], e["message"]) for b in batches for e in b.errors.to_dicts()
    ]
    return rows, errors


def check_numbering(batches: list[Batch], data: bytes) -> None:
    """Every record gets exactly one row number (a row or an error row); numbers are 1..n in
    file order, lines never go backwards, and each batch knows where the next one starts."""
    numbered: list[tuple[int, int]] = []
    row = 1
    for k, b in enumerate(batches):
        assert b.index == k
        mine = sorted(
            [(r, ln) for r, ln in zip(b.frame["__row"], b.frame["__line"], strict=True)]
            + [(r, ln) for r, ln in zip(b.errors["row"], b.errors["line"], strict=True)]
        )
        assert [r for r, _ in mine] == list(range(row, row + b.rows)), (k, mine)
        row += b.rows
        assert b.after.row == row and b.after.batch == k + 1
        numbered += mine
    lines = [ln for _, ln in numbered]
    assert lines == sorted(lines)
    assert all(1 <= ln <= data.count(b"\n") + 1 for ln in lines)


# ---------------------------------------------------------------- hostile files, one by one

H = b"id,email,name,role,created_at\n"
OK = b",a@b.cd,Ann,admin,2024-01-01T00:00:00Z"


def users(data: bytes, fmt: str = "csv", cap: int = 4096) -> list[tuple[Any, ...]]:
    """(row, line, field, code, message) of every error row, reader and validator together."""
    out: list[tuple[Any, ...]] = []
    batches = read(
        data, fmt, columns=USERS.column_names, required=USERS.required_columns, record_cap=cap
    )
    for b in batches:
        checked = validate(b.frame, USERS)
        errors = pl.concat([b.errors, checked.errors]).sort("row", "field", nulls_last=True)
        out += errors.select("row", "line", "field", "code", "message").rows()
        assert (
            not checked.valid.select(
                pl.any_horizontal(pl.col(pl.String).str.contains("\x00", literal=True))
            )
            .to_series()
            .any()
        ), "a NUL reached a valid row: PostgreSQL text cannot store it"
    return out


NUL_MSG = "name must not contain NUL (\\x00) characters: PostgreSQL text cannot hold them"
QUOTE_MSG = (
    'a quote (") inside an unquoted field or after a closing quote: enclose the whole field in '
    'quotes and double each quote inside it ("")'
)


@pytest.mark.parametrize(
    ("data", "fmt", "expected"),
    [
        pytest.param(b"\xef\xbb\xbf" + H + OK + b"\n", "csv", [], id="utf8-bom"),
        pytest.param(H.replace(b"\n", b"\r\n") + OK + b"\r\n" + OK + b"\r\n", "csv", [], id="crlf"),
        pytest.param(H + OK + b"\r\n" + OK + b"\n", "csv", [], id="mixed-crlf-and-lf"),
        pytest.param(
            H + b',a@b.cd,"Ann\r\nB\rC",admin,2024-01-01\n' + OK + b"\n",
            "csv",
            [],
            id="cr-and-crlf-inside-quotes-are-data",
        ),
        pytest.param(
            H + OK + b"\r" + OK + b"\n",
            "csv",
            [
                (
                    1,
                    2,
                    None,
                    "malformed_record",
                    "expected 5 fields (the header's), found 9 (it holds a carriage return (CR) "
                    "without a line feed: records end with LF or CRLF)",
                )
            ],
            id="bare-cr-between-records-is-one-ragged-record",
        ),
        pytest.param(
            H + b",a@b.cd,A\x00B,admin,2024-01-01\n" + OK + b"\n",
            "csv",
            [
                (
                    1,
                    2,
                    "name",
                    "invalid_format",
                    NUL_MSG,
                )
            ],
            id="nul-in-text",
        ),
        pytest.param(
            b'{"email":"a@b.cd","name":"A\\u0000B","role":"admin","created_at":"2024-01-01"}\n',
            "ndjson",
            [
                (
                    1,
                    1,
                    "name",
                    "invalid_format",
                    NUL_MSG,
                )
            ],
            id="escaped-nul-in-json-text",
        ),
        pytest.param(
            b'{"email":"a@b.cd","name":"A\x00B","role":"admin","created_at":"2024-01-01"}\n',
            "ndjson",
            [(1, 1, None, "malformed_record", "the line is not a valid JSON object")],
            id="raw-nul-in-json-is-invalid-json",
        ),
        pytest.param(
            H + b',a@b.cd,A"nn,admin,2024-01-01\n' + OK + b"\n" + b',c@b.cd,C"y,admin,2024-01-01\n',
            "csv",
            [(1, 2, None, "malformed_record", QUOTE_MSG)],
            id="stray-quotes-pair-up-across-lines",
        ),
        pytest.param(
            H + b',a@b.cd,"Ann"x,admin,2024-01-01\n' + OK + b"\n",
            "csv",
            [(1, 2, None, "malformed_record", QUOTE_MSG)],
            id="text-after-closing-quote",
        ),
        pytest.param(
            b'[1, "x", null, [1], true, {"email":"a@b.cd","name":"A","role":"admin",'
            b'"created_at":"2024-01-01"}]',
            "json",
            [
                (
                    row,
                    1,
                    None,
                    "malformed_record",
                    f"the element of the JSON array holds {k}, not a JSON object",
                )
                for row, k in enumerate(
                    ("a number", "a string", "null", "an array", "a boolean"), start=1
                )
            ],
            id="json-array-elements-that-are-not-objects",
        ),
        pytest.param(
            b'{"email":'
            + b"[" * 100
            + b"]" * 100
            + b"}\n"
            + b'{"email":'
            + b"[" * 63
            + b"]" * 63
            + b"}\n",
            "ndjson",
            [
                (
                    1,
                    1,
                    None,
                    "malformed_record",
                    f"the record nests arrays/objects 101 levels deep; at most {MAX_JSON_DEPTH} "
                    "are accepted",
                ),
                (2, 2, "created_at", "required", "created_at is required"),
                (2, 2, "email", "invalid_format", "email must be a JSON string; got an array"),
                (2, 2, "name", "required", "name is required"),
                (2, 2, "role", "required", "role is required"),
            ],
            id="json-nesting-cap",
        ),
        pytest.param(
            json.dumps({f"k{i}": i for i in range(MAX_FIELDS + 1)}).encode() + b"\n",
            "ndjson",
            [
                (
                    1,
                    1,
                    None,
                    "malformed_record",
                    f"the object has {MAX_FIELDS + 1} fields; at most {MAX_FIELDS} are accepted",
                )
            ],
            id="json-field-count-cap",
        ),
    ],
)
def test_hostile_records_give_precise_error_rows(
    data: bytes, fmt: str, expected: list[tuple[Any, ...]]
) -> None:
    assert users(data, fmt, cap=10**6) == expected


@pytest.mark.parametrize(
    ("data", "fmt", "error", "message"),
    [
        (b"", "csv", MissingColumns, "the file is empty"),
        (b"\n\n", "csv", MissingColumns, "the file is empty"),
        (H, "csv", FileError, "the CSV file has a header but no records"),
        (H + b"\n  \n", "csv", FileError, "the CSV file has a header but no records"),
        (b"", "ndjson", FileError, "the file holds no records"),
        (b" \n\r\n", "ndjson", FileError, "the file holds no records"),
        (b"[]", "json", FileError, "the JSON array is empty"),
        (b"  [ \n ]\n", "json", FileError, "the JSON array is empty"),
        (b"", "json", FileError, "the file is empty"),
        (b'{"id": 1}', "json", FileError, "must hold one array of objects"),
        (b"[{}", "json", FileError, "the JSON array is not closed"),
        (b"[{}] x", "json", FileError, "unexpected data after the end of the JSON array"),
        (
            H.replace(b"\n", b"\r") + OK + b"\r",
            "csv",
            FileError,
            "the file seems to use CR-only line endings",
        ),
        (b'id,"email\nname\n', "csv", FileError, "the CSV header ends inside a quoted field"),
        (H + b',"open,x,y,z\n', "csv", FileError, "ends inside a quoted field"),
        (
            b"id,email,id,name,role,created_at\n" + OK + b"\n",
            "csv",
            MissingColumns,
            "the CSV header repeats column(s): id",
        ),
        (
            b"id,email,name,role,created_at,\x00,\x00\n",
            "csv",
            MissingColumns,
            "repeats column(s): \u2400",
        ),
        (
            b"id,email\n",
            "csv",
            MissingColumns,
            "lacks required column(s): name, role, created_at; found: id, email",
        ),
        (
            ",".join(f"c{i}" for i in range(MAX_FIELDS + 1)).encode() + b"\n",
            "csv",
            FileError,
            f"the CSV header has {MAX_FIELDS + 1} columns; at most {MAX_FIELDS} are accepted",
        ),
        ("id,email\n".encode("utf-16"), "csv", InvalidEncoding, "UTF-16 (or UTF-32) byte-order"),
        ("[{}]".encode("utf-16-be"), "json", FileError, "must hold one array"),
        (
            H + b",\xe9t\xe9,x,admin,2024\n",
            "csv",
            InvalidEncoding,
            "byte 0xe9 at offset 31 (line 2)",
        ),
        (
            b'{"a":"' + b"x" * 5000 + b'"}\n',
            "ndjson",
            RecordTooLarge,
            "a record starting on line 1 is longer than 4096 bytes",
        ),
        (
            H + OK + b"\n" + b"," * 5000 + b"\n",
            "csv",
            RecordTooLarge,
            "a record starting on line 3 is longer than 4096 bytes",
        ),
        (b"a" * 5000 + b"\n", "csv", MissingColumns, "header line is longer than the record"),
    ],
)
def test_hostile_files_fail_with_a_precise_message(
    data: bytes, fmt: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        users(data, fmt, cap=10**5 if b"c1024" in data else 4096)
    assert message in str(info.value)
    assert "\x00" not in str(info.value)  # the message becomes the job's error (PostgreSQL text)


@pytest.mark.parametrize(
    ("data", "fmt", "warning"),
    [
        (
            b"id,email,name,role,created_at,color,\x00\n" + OK + b",red,x\n",
            "csv",
            "ignored unknown column(s): color, \u2400",
        ),
        (
            b'{"email":"a@b.cd","color":"red","z\\u0000":1}\n{"size":1}\n',
            "ndjson",
            "ignored unknown key(s): color, size, z\u2400",
        ),
        (
            b'[{"email":"a@b.cd","color":"red"},\n{"size":1}]',
            "json",
            "ignored unknown key(s): color, size",
        ),
    ],
)
def test_unknown_columns_and_keys_are_reported_once(data: bytes, fmt: str, warning: str) -> None:
    headers: list[Header] = []
    read(data, fmt, columns=USERS.column_names, required=USERS.required_columns, headers=headers)
    assert headers[0].warnings == [warning]
    resumed: list[Header] = []
    read(data, fmt, columns=USERS.column_names, start=Position(1, 1, 2, 1), headers=resumed)
    assert resumed[0].warnings in ([], [warning])  # CSV's come from the header itself


def test_known_keys_only_give_no_warning() -> None:
    headers: list[Header] = []
    read(b'{"id":"1","name":"a"}\n{"x":null}\n', "ndjson", headers=headers)
    assert headers[0].warnings == []


def test_a_cr_before_a_separator_reads_as_part_of_a_line_ending() -> None:
    """Documented behaviour: a CR inside an unquoted field is data, but one right before a
    comma or the line end is read as (part of) a CRLF and dropped; quoting keeps it."""
    batches = read(b'id,name,x\n1,a\rb,c\r\n2,a\r,"c\r"\n', "csv")
    assert [(r["name"], r["x"]) for r in outcome(batches)[0]] == [("a\rb", "c"), ("a", "c\r")]


# ---------------------------------------------------------------- fuzzing: any bytes


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for pos, drop, insert in edits:
        at = pos % (len(out) + 1)
        out[at : at + drop] = insert
    return bytes(out)


SAMPLES = {
    "csv": b'id,name,x\n1,"a\r\nb",q\r\n\r\n2,"say ""hi""",\n3,,z,extra\n4,w,"m\nl"\n5,e,f',
    "ndjson": b'{"id":"1"}\n\n{"id":2,"name":["a"]}\n{"id":\n[1]\n"s"\n{"id":"7","x":{"a":1}}\n',
    "json": b' [\n {"id":"1","name":"a,\\"]b\\\\"},\n {"id":"2",\n "name":"x"}, 7,\n'
    b' {"id":"3","x":[1,{"a":"}"}]}\n]\n',
}
HOSTILE_BYTES = st.sampled_from(
    [b'"', b",", b"\n", b"\r", b"\r\n", b"\x00", b"{", b"}", b"[", b"]", b"\\", b"\xff", b" "]
)


def _any_read(
    data: bytes, fmt: str, batch_rows: int, chunk: int, cap: int, plain: bytes | None = None
) -> list[Batch] | None:
    """Read ``data`` (``plain``: its uncompressed bytes); None when it fails as a whole."""
    try:
        batches = read(data, fmt, batch_rows=batch_rows, chunk=chunk, record_cap=cap)
    except FileError as exc:
        assert str(exc) and "\x00" not in str(exc)
        return None
    check_numbering(batches, data if plain is None else plain)
    for b in batches:
        record = [] if fmt == "csv" else ["__record"]
        assert b.frame.columns == [*COLS, *record, "__row", "__line"]
        assert all(b.errors["code"] == "malformed_record")
        assert not b.errors["value"].str.contains("\x00", literal=True).any()
    return batches


@FUZZ
@given(
    fmt=st.sampled_from(["csv", "ndjson", "json"]),
    edits=st.lists(
        st.tuples(
            st.integers(0, 300), st.integers(0, 3), st.one_of(HOSTILE_BYTES, st.binary(max_size=4))
        ),
        max_size=6,
    ),
    batch_rows=st.integers(1, 5),
    chunk=st.integers(1, 64),
    cap=st.sampled_from([16, 4096]),
)
@example(fmt="csv", edits=[(12, 0, b'"')], batch_rows=2, chunk=3, cap=4096)
@example(fmt="json", edits=[(0, 400, b"[]")], batch_rows=1, chunk=1, cap=4096)
@example(fmt="ndjson", edits=[(0, 400, b"\n \n")], batch_rows=1, chunk=1, cap=4096)
def test_mutated_files_give_rows_error_rows_or_a_file_error(
    fmt: str, edits: list[tuple[int, int, bytes]], batch_rows: int, chunk: int, cap: int
) -> None:
    data = _mutate(SAMPLES[fmt], edits)
    note(f"data={data!r}")
    batches = _any_read(data, fmt, batch_rows, chunk, cap)
    zipped = _any_read(gzip.compress(data), fmt, batch_rows, chunk, cap, plain=data)
    assert (batches is None) == (zipped is None)
    if batches is not None and zipped is not None:
        assert outcome(zipped) == outcome(batches)


@FUZZ
@given(
    fmt=st.sampled_from(["csv", "ndjson", "json"]),
    data=st.binary(max_size=300) | st.lists(HOSTILE_BYTES | st.binary(max_size=3)).map(b"".join),
    batch_rows=st.integers(1, 4),
)
def test_random_bytes_never_crash_a_reader(fmt: str, data: bytes, batch_rows: int) -> None:
    if fmt == "csv":
        data = b"id,name,x\n" + data
    elif fmt == "json":
        data = b"[" + data
    _any_read(data, fmt, batch_rows, 5, 4096)


# ---------------------------------------------------------------- fuzzing: CSV with an oracle

CELL = st.lists(
    st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from([",", '"', "\n", "\r", "\r\n", "\x00", " ", "\t", "é", '""']),
    max_size=8,
).map("".join)
PLAIN = st.text(alphabet="abc xyz019-_", max_size=5)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """A CSV file of well-formed records (written by the csv module), ragged records and blank
    lines; returns the bytes and, per record, ("ok", line, values) or ("ragged", line, n)."""
    extra = draw(st.lists(st.sampled_from(["extra", "more"]), unique=True, max_size=2))
    names = draw(st.permutations([*COLS, *extra]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    quote_all = draw(st.booleans())
    text = io.StringIO()
    csv.writer(text, lineterminator=eol).writerow(names)
    expected: list[Any] = []
    for kind in draw(st.lists(st.sampled_from(["ok", "ok", "ragged", "blank"]), max_size=25)):
        line = text.getvalue().count("\n") + 1
        if kind == "blank":
            text.write(draw(st.sampled_from(["", " ", "\t "])) + eol)
        elif kind == "ragged":
            n = draw(st.integers(1, len(names) + 3).filter(lambda k: k != len(names)))
            text.write(",".join(draw(PLAIN) for _ in range(n)) + eol)
            if n == 1 and not text.getvalue().rsplit(eol, 2)[-2].strip():
                continue  # a lone blank cell is a blank line, not a record
            expected.append(("ragged", line, n))
        else:
            values = [draw(CELL) for _ in names]
            if quote_all:
                csv.writer(text, lineterminator=eol, quoting=csv.QUOTE_ALL).writerow(values)
            else:
                csv.writer(text, lineterminator=eol).writerow(values)
            row = dict(zip(names, values, strict=True))
            quoted = {n: quote_all or any(c in v for c in ',"\n') for n, v in row.items()}
            expected.append(("ok", line, {n: (row[n], quoted[n]) for n in COLS}))
    data = text.getvalue().encode()
    if draw(st.booleans()):
        data = data.removesuffix(eol.encode())  # no line end after the last record
    return data, expected


def _cell(value: str | None, quoted: bool) -> str | None:
    """What a cell must read as: empty is null; an unquoted cell's trailing CRs go with the
    line end or separator (see test_a_cr_before_a_separator_reads_as_part_of_a_line_ending)."""
    if value is not None and not quoted:
        value = value.rstrip("\r")
    return value or None


@FUZZ
@given(file=csv_files(), batch_rows=st.integers(1, 7), chunk=st.integers(1, 50))
def test_csv_oracle(file: tuple[bytes, list[Any]], batch_rows: int, chunk: int) -> None:
    data, expected = file
    try:
        batches = read(data, "csv", batch_rows=batch_rows, chunk=chunk)
    except FileError as exc:
        assert not [e for e in expected if e[0] != "blank"], exc
        assert "no records" in str(exc)
        return
    check_numbering(batches, data)
    rows, errors = outcome(batches)
    want_rows = [(i + 1, e[1]) for i, e in enumerate(expected) if e[0] == "ok"]
    want_errors = [(i + 1, e[1]) for i, e in enumerate(expected) if e[0] == "ragged"]
    assert [(r["__row"], r["__line"]) for r in rows] == want_rows
    assert [(e[0], e[1]) for e in errors] == want_errors
    oks = [e[2] for e in expected if e[0] == "ok"]
    for got, want in zip(rows, oks, strict=True):
        assert {c: _cell(got[c], want[c][1]) for c in COLS} == {c: _cell(*want[c]) for c in COLS}
    width = len(data.split(b"\n", 1)[0].split(b","))
    ragged = [e for e in expected if e[0] == "ragged"]
    for (_, _, _, message), want in zip(errors, ragged, strict=True):
        assert message == f"expected {width} fields (the header's), found {want[2]}"


# ---------------------------------------------------------------- fuzzing: JSON with an oracle

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


# ---------------------------------------------------------------- resume and validation


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    fmt=st.sampled_from(["csv", "ndjson", "json"]),
    edits=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 2), HOSTILE_BYTES), max_size=4),
    batch_rows=st.integers(1, 3),
)
def test_resuming_from_any_checkpoint_gives_the_remaining_batches(
    fmt: str, edits: list[tuple[int, int, bytes]], batch_rows: int
) -> None:
    data = _mutate(SAMPLES[fmt], edits)
    note(f"data={data!r}")
    try:
        full = read(data, fmt, batch_rows=batch_rows)
    except FileError:
        return
    for k, batch in enumerate(full):
        resumed = read(data, fmt, batch_rows=batch_rows, start=batch.after)
        assert [b.after for b in resumed] == [b.after for b in full[k + 1 :]]
        assert outcome(resumed) == outcome(full[k + 1 :])


PLAUSIBLE = st.sampled_from(
    [
        "a@b.cd",
        "admin",
        "draft",
        "2024-01-01",
        "2024-01-01T00:00:00+01:00",
        "true",
        '["t"]',
        "3f2b8c1e-7d4a-4e2b-9c1d-2a3b4c5d6e7f",
        "cm_x",
        "a|b",
        '["a\\u0000"]',
        "a\x00b",
        "kebab-case",
    ]
)


@FUZZ
@given(
    cells=st.lists(st.lists(st.none() | CELL | PLAUSIBLE, min_size=9, max_size=9), max_size=20),
    resource=st.sampled_from(["users", "articles", "comments"]),
)
def test_validation_of_hostile_strings_accounts_for_every_row(
    cells: list[list[str | None]], resource: str
) -> None:
    """validate() (with the native checks) over any strings: every row is valid or has error
    rows with known codes, and no NUL reaches a valid row."""
    res = catalog()[resource]
    frame = pl.DataFrame(
        {c.name: [r[i] for r in cells] for i, c in enumerate(res.columns)}
        | {"__row": list(range(1, len(cells) + 1)), "__line": list(range(2, len(cells) + 2))},
        schema={**{c.name: pl.String for c in res.columns}, "__row": pl.Int64, "__line": pl.Int64},
    )
    checked = validate(frame, res)
    failed = set(checked.errors["row"].to_list())
    assert set(checked.valid["__row"].to_list()) == set(range(1, len(cells) + 1)) - failed
    assert set(checked.errors["code"].to_list()) <= {
        "required",
        "invalid_format",
        "invalid_value",
        "too_long",
    }
    assert not checked.errors["value"].str.contains("\x00", literal=True).any()
    for c in res.columns:
        col = checked.valid[c.name]
        if col.dtype == pl.String:
            assert not col.str.contains("\x00", literal=True).any()
        elif col.dtype == pl.List(pl.String):
            assert not col.explode().str.contains("\x00", literal=True).any()


@pytest.mark.parametrize("resource", ["users", "articles", "comments"])
def test_a_batch_of_only_malformed_records_validates_to_nothing(resource: str) -> None:
    """Regression: validate() on a 0-row frame raised for articles (an untyped all-False mask
    for tags), failing every attempt of a job whose whole batch was malformed."""
    res = catalog()[resource]
    batches = read(b"[1]\n", "ndjson", columns=res.column_names)
    checked = validate(batches[0].frame, res)
    assert (checked.valid.height, checked.errors.height) == (0, 0)
    assert batches[0].errors["row"].to_list() == [1]


@pytest.mark.parametrize("chunk", [1, 7, 4096, 10**6])
@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b'{"id":"1"}\n{"a":"' + b"x" * 5000 + b'"}\n{"id":"2"}\n', "ndjson"),
        (b'[{"id":"1"},{"a":"' + b"x" * 5000 + b'"},{"id":"2"}]', "json"),
        (b"id,name,x\n1,a,b\n2," + b"x" * 5000 + b",c\n3,d,e\n", "csv"),
        (b"id,name,x" + b"y" * 5000 + b"\n1,a,b\n", "csv"),
    ],
)
def test_the_record_cap_does_not_depend_on_chunk_sizes(data: bytes, fmt: str, chunk: int) -> None:
    """Regression: a long record that arrived whole in one chunk slipped past the cap."""
    with pytest.raises(FileError, match="longer than"):
        read(data, fmt, chunk=chunk)
