"""pytest-benchmark's ``pedantic`` mode, returning the timed call's result and its seconds, and
watching how much CPU *other* processes took meanwhile.

The suite shares the machine with whatever else runs there (other engineers' test runs on a
2-core box change a figure by 2-3x). :class:`CpuWatch` tells such a run apart: the machine's busy
CPU time (``/proc/stat``) minus the CPU time of this pytest process and all its descendants
(PostgreSQL, Redis, the API, the workers, psql), exited ones included through their parents'
``cutime``/``cstime``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_TICK = os.sysconf("SC_CLK_TCK")


def _system_busy() -> float:
    """Seconds of CPU the whole machine spent busy since boot (user+nice+system+irq+softirq)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / _TICK


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, reaped children included."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        rest = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
        pid = int(entry.name)
        parents[pid] = int(rest[1])
        times[pid] = sum(int(x) for x in rest[11:15]) / _TICK  # utime stime cutime cstime
    total = 0.0
    for pid, cpu in times.items():
        p = pid
        while p > 1 and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += cpu
    return total


@dataclass
class CpuWatch:
    """Accumulates, over the timed calls, wall time and the CPU taken by us and by others
    (sampled in pedantic's untimed setup and teardown, so the timed call pays nothing)."""

    wall: float = 0.0
    ours: float = 0.0
    others: float = 0.0

    _start: tuple[float, float, float] | None = None

    def begin(self) -> None:
        t0 = time.perf_counter()  # the window brackets the /proc samples (10 ms ticks)
        self._start = (t0, _system_busy(), _tree_cpu(os.getpid()))

    def end(self) -> None:
        assert self._start is not None, "end() without begin()"
        t0, busy0, ours0 = self._start
        ours = _tree_cpu(os.getpid()) - ours0
        busy = _system_busy() - busy0
        self.wall += time.perf_counter() - t0
        self.ours += ours
        self.others += max(0.0, busy - ours)
        self._start = None

    def others_share(self) -> float:
        """Fraction of the machine's CPU capacity other processes used during the runs."""
        return self.others / (self.wall * (os.cpu_count() or 1)) if self.wall else 0.0

    def extra(self) -> dict[str, float]:
        return {"cpu_ours_s": round(self.ours, 2), "cpu_others_s": round(self.others, 2),
                "cpu_others_share": round(self.others_share(), 3),
                "cpu_window_s": round(self.wall, 3)}  # fmt: skip


def timed(
    benchmark: Any,
    fn: Callable[[], T],
    *,
    setup: Callable[[], None] | None = None,
    rounds: int = 1,
    warmup_rounds: int = 0,
) -> tuple[T, float, CpuWatch]:
    """Run ``fn`` ``rounds`` times (``setup`` untimed before each); (last result, median s,
    CPU use of the measured rounds and their warm-ups)."""
    watch = CpuWatch()

    def before() -> None:  # untimed, like pedantic's setup and teardown themselves
        if setup is not None:
            setup()
        watch.begin()

    result: T = benchmark.pedantic(
        fn, setup=before, teardown=watch.end, rounds=rounds, iterations=1,
        warmup_rounds=warmup_rounds,
    )  # fmt: skip
    return result, float(benchmark.stats.stats.median), watch
