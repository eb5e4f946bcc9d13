"""CSV formula guard: a cell a spreadsheet would evaluate gets a leading ``'``, also when blanks
come before the formula character."""

from __future__ import annotations

import csv
import io

import polars as pl
import pytest

from engine.exports.writers import writer_for

CELLS = [
    # (cell, guarded)
    ("=1+1", True),
    ("+1", True),
    ("-1", True),
    ("@SUM(A1)", True),
    ("\t=1", True),
    ("\r=1", True),
    ("\tplain", True),  # a leading tab or CR alone is enough (OWASP)
    ("  =cmd|' /C calc'!A0", True),
    (" +1", True),
    ("   -2", True),
    ("\n@x", True),
    ("\u00a0=HYPERLINK(1)", True),  # no-break space
    ("\u3000=1", True),  # ideographic space
    (" \t \r\n=1", True),
    ("plain", False),
    ("a=1", False),
    ("email@example.com", False),
    ("x-y", False),
    (" plain", False),
    ("", False),
    ("   ", False),
]


def _written(values: list[str], *, guard: bool = True) -> list[str]:
    writer = writer_for("csv", ["v"], formula_guard=guard)
    data = writer.header() + writer.batch(pl.DataFrame({"v": values}, schema={"v": pl.String}))
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert rows[0] == ["v"]
    return [row[0] if row else "" for row in rows[1:]]


@pytest.mark.parametrize(("cell", "guarded"), CELLS, ids=[repr(c) for c, _ in CELLS])
def test_the_guard_prefixes_exactly_the_formula_cells(cell: str, guarded: bool) -> None:
    assert _written([cell]) == (["'" + cell] if guarded else [cell])


def test_one_batch_of_many_cells_is_guarded_cell_by_cell() -> None:
    cells = [c for c, _ in CELLS]
    expected = ["'" + c if g else c for c, g in CELLS]
    assert _written(cells) == expected


def test_nulls_and_other_types_pass_through() -> None:
    writer = writer_for("csv", ["n", "s"])
    frame = pl.DataFrame({"n": [-1, 2], "s": [None, " =x"]})
    assert writer.batch(frame) == b"-1,\n2,' =x\n"


def test_the_guard_can_be_turned_off() -> None:
    cells = [c for c, _ in CELLS]
    assert _written(cells, guard=False) == cells
