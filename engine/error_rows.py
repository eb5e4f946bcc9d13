"""The one shape every error row has, from reading to the report."""

from __future__ import annotations

import polars as pl

#: Column order and types of an error row (``row`` and ``line`` are 1-based).
ERROR_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.Int64(),
    "line": pl.Int64(),
    "field": pl.String(),
    "code": pl.String(),
    "message": pl.String(),
    "value": pl.String(),
}


def empty_errors() -> pl.DataFrame:
    return pl.DataFrame(schema=ERROR_SCHEMA)


def malformed(
    rows: list[int] | pl.Series,
    lines: list[int] | pl.Series,
    message: str | pl.Series,
    value: str | pl.Series | None = None,
) -> pl.DataFrame:
    n = len(rows)
    frame = pl.DataFrame(
        {
            "row": pl.Series(rows, dtype=pl.Int64),
            "line": pl.Series(lines, dtype=pl.Int64),
            "field": pl.Series([None] * n, dtype=pl.String),
            "code": pl.Series(["malformed_record"] * n, dtype=pl.String),
            "message": message if isinstance(message, pl.Series) else pl.Series([message] * n),
            "value": value
            if isinstance(value, pl.Series)
            else pl.Series([value] * n, dtype=pl.String),
        }
    )
    return frame.cast(ERROR_SCHEMA)  # type: ignore[arg-type]
