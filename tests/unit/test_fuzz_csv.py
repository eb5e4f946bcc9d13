"""Bounded hypothesis fuzzing of the CSV reader against an oracle — no servers: files written by
the csv module (any cell text, quoted or not, LF or CRLF, ragged records, blank lines) read in
any chunk and batch sizes give exactly the oracle's rows, values and error rows.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.errors import FileError
from tests.support.readers import CELL, COLS, FUZZ, check_numbering, outcome, read

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
    line end or separator (test_record_errors.py:
    test_a_cr_before_a_separator_reads_as_part_of_a_line_ending)."""
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
