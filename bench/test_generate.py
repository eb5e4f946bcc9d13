"""The test-data generator's speed (``testdata/generate.py``): 100,000 NDJSON records with 5 %
planted defects per resource, written to a temporary file, expectations not written. Not a
bulkio figure: it says how long the first run of the suite (or of a test that generates its
files) spends making its inputs. Median of 3 rounds; the table shows rows/s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from report import Recorder
from timing import timed

from tests.support.datafiles import gen

ROWS = 100_000
ROUNDS = 3


@pytest.mark.parametrize("resource", gen.RESOURCES)
def test_generate(benchmark: object, recorder: Recorder, tmp_path: Path, resource: str) -> None:
    out = tmp_path / f"{resource}.ndjson"

    def generate() -> Any:
        return gen.generate(resource, "ndjson", ROWS, 1, 0.05, str(out), write_expected=False)

    expected, seconds, cpu = timed(benchmark, generate, rounds=ROUNDS)
    assert expected.total_records == ROWS
    recorder.record(f"generate.{resource}", seconds, rows=ROWS, rounds=ROUNDS, **cpu.extra())
