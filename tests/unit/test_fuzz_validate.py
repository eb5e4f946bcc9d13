"""Bounded hypothesis fuzzing of ``validate`` (and the native checks behind it) with hostile
strings — no servers: every row is valid or has error rows with known codes, and no NUL reaches
a valid row.
"""

from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from engine.imports.validate import validate
from engine.resources import catalog
from tests.support.readers import CELL, FUZZ

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
