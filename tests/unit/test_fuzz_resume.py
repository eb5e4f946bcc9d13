"""Resuming a reading from a checkpoint — no servers: from any batch's ``after`` position, the
reader gives exactly the remaining batches of a full reading, for mutated files of each format.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from engine.errors import FileError
from tests.support.readers import HOSTILE_BYTES, SAMPLES, mutate, outcome, read


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
    data = mutate(SAMPLES[fmt], edits)
    note(f"data={data!r}")
    try:
        full = read(data, fmt, batch_rows=batch_rows)
    except FileError:
        return
    for k, batch in enumerate(full):
        resumed = read(data, fmt, batch_rows=batch_rows, start=batch.after)
        assert [b.after for b in resumed] == [b.after for b in full[k + 1 :]]
        assert outcome(resumed) == outcome(full[k + 1 :])
