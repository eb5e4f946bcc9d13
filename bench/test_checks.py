"""Native checks (``engine.checks``) against the same checks as polars regex expressions, on
1,000,000 realistic strings from the generated files (e-mails and ids of users, article slugs,
comment bodies). Each polars expression is the documented rule of ``engine/checks.py``; the
benchmark asserts that both give the same answer on the data before comparing their speed.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest
from inputs import data_file
from report import Recorder
from timing import timed

from engine import checks

ROWS = 1_000_000
ROUNDS = 10

_LOCAL = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
EMAIL_RE = (
    rf"^[{_LOCAL}]+(?:\.[{_LOCAL}]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
EMAIL_LENGTHS_RE = r"^[^@]{1,64}@[^@]{1,253}$"
UUID_RE = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
SLUG_RE = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


def polars_is_email(s: pl.Series) -> pl.Series:
    return s.str.contains(EMAIL_RE) & s.str.contains(EMAIL_LENGTHS_RE) & (s.str.len_bytes() <= 254)


def polars_is_uuid(s: pl.Series) -> pl.Series:
    return s.str.contains(UUID_RE)


def polars_is_slug(s: pl.Series) -> pl.Series:
    return s.str.contains(SLUG_RE) & (s.str.len_bytes() <= 200)


def polars_word_count(s: pl.Series) -> pl.Series:
    return s.str.count_matches(r"\S+")  # \s is Unicode White_Space, as in the native check


def polars_split_words(s: pl.Series) -> pl.Series:
    return s.str.split(" ").list.len()  # the naive count: not equivalent (newlines, "  ")


Check = Callable[[pl.Series], pl.Series]
#: check -> (resource, column, native, polars equivalent)
CHECKS: dict[str, tuple[str, str, Check, Check]] = {
    "is_email": ("users", "email", checks.is_email, polars_is_email),
    "is_uuid": ("users", "id", checks.is_uuid, polars_is_uuid),
    "is_slug": ("articles", "slug", checks.is_slug, polars_is_slug),
    "word_count": ("comments", "body", checks.word_count, polars_word_count),
}


@pytest.fixture(scope="module")
def strings() -> dict[str, pl.Series]:
    """1M strings per check, read from the \\copy files (the valid records of the generator)."""
    out: dict[str, pl.Series] = {}
    for name, (resource, column, _, _) in CHECKS.items():
        path = data_file(resource, "csv", ROWS, plain_csv=True).path
        frame = pl.read_csv(path, columns=[column], infer_schema=False)
        out[name] = frame.to_series().rechunk()
        assert out[name].len() == ROWS and out[name].null_count() == 0
    return out


@pytest.mark.parametrize("impl", ["polars", "native"])
@pytest.mark.parametrize("check", list(CHECKS))
def test_check(benchmark: object, recorder: Recorder, strings: dict[str, pl.Series], check: str,
               impl: str) -> None:  # fmt: skip
    _, _, native, polars = CHECKS[check]
    fn = native if impl == "native" else polars
    s = strings[check]
    result, seconds, cpu = timed(benchmark, lambda: fn(s), rounds=ROUNDS, warmup_rounds=1)
    other = (polars if impl == "native" else native)(s)
    assert result.len() == ROWS
    mismatches = int((result.cast(pl.Int64) != other.cast(pl.Int64)).sum())
    assert mismatches == 0, f"native and polars {check} disagree on {mismatches} values"
    recorder.record(f"checks.{check}.{impl}", seconds, rows=ROWS, rounds=ROUNDS, **cpu.extra())
    if check == "word_count" and impl == "native":
        recorder.record(
            "checks.word_count.native_vs_split", seconds, rows=ROWS, rounds=ROUNDS, **cpu.extra()
        )


def test_word_count_split(benchmark: object, recorder: Recorder, strings: dict[str, pl.Series]
                          ) -> None:  # fmt: skip
    """The naive ``split(" ")`` count, for reference (it over-counts "a  b" and misses "\\n")."""
    s = strings["word_count"]
    _, seconds, cpu = timed(
        benchmark, lambda: polars_split_words(s), rounds=ROUNDS, warmup_rounds=1
    )
    recorder.record(
        "checks.word_count.polars_split", seconds, rows=ROWS, rounds=ROUNDS, **cpu.extra()
    )
