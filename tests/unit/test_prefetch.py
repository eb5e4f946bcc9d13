"""engine.prefetch: order, errors, and the bound on items built ahead of the consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from engine.prefetch import prefetch


class Source:
    """Counts items started by the background thread."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at
        self.started = 0
        self.finished = threading.Event()

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                self.started += 1
                if i == self.fail_at:
                    raise ValueError(f"item {i} is broken")
                yield i
        finally:
            self.finished.set()


def settle() -> None:
    time.sleep(0.1)  # give the background thread every chance to run ahead


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_items_arrive_in_order_and_at_most_depth_are_built_ahead(depth: int) -> None:
    src = Source(8)
    out = []
    gen = prefetch(src, depth=depth)
    for item in gen:
        settle()
        # The consumer holds item `item`; the thread may have started `depth` more, not more.
        assert src.started <= item + 1 + depth, (item, src.started)
        out.append(item)
    assert out == list(range(8))


def test_the_thread_does_run_ahead() -> None:
    src = Source(10)
    gen = prefetch(src, depth=1)
    assert next(gen) == 0
    settle()
    assert src.started == 2  # item 1 was built while the consumer held item 0
    gen.close()


def test_an_error_surfaces_after_the_items_before_it() -> None:
    gen = prefetch(Source(10, fail_at=3), depth=1)
    assert [next(gen), next(gen), next(gen)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3 is broken"):
        next(gen)


def test_closing_early_stops_the_thread() -> None:
    src = Source(1000)
    gen = prefetch(src, depth=1)
    assert next(gen) == 0
    started = time.monotonic()
    gen.close()
    assert time.monotonic() - started < 5
    assert src.started <= 3
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


def test_an_empty_source_ends_at_once() -> None:
    assert list(prefetch(Source(0))) == []
