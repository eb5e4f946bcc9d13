"""What the suite reports: the figures, their baselines and targets, the measurements
the benchmarks record, and the final table (terminal, ``bench/results/latest.json`` and ``.md``).

A figure's ratio compares it with its baseline measured in the same run:

* ``time``        bulkio seconds / baseline seconds (lower is better; imports);
* ``throughput``  bulkio rows/s / baseline rows/s (higher is better; exports);
* ``speedup``     baseline seconds / this figure's seconds (higher is better);
* ``growth``      this value / baseline value (peak RSS at 1M over 100K rows).
"""

from __future__ import annotations

import json
import operator
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

#: Share of the machine's CPU that other processes took during a measurement from which on the
#: figure is flagged "contended" (not comparable with a run on a quiet machine).
CONTENDED = 0.05
#: /proc/stat counts in 10 ms ticks: over a shorter window the share is too coarse to flag.
MIN_WINDOW = 1.0

RatioKind = Literal["time", "throughput", "speedup", "growth"]


@dataclass(frozen=True)
class Target:
    """``on`` (the ratio or the figure's own value) must be ``op`` ``bound``."""

    on: Literal["ratio", "value"]
    op: Literal["<=", ">="]
    bound: float

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.on == "ratio" else value
        if x is None:
            return None
        compare: Callable[[float, float], bool] = operator.le if self.op == "<=" else operator.ge
        return compare(x, self.bound)

    def __str__(self) -> str:
        suffix = "x" if self.on == "ratio" else " MiB"
        return f"{self.op} {self.bound:g}{suffix}"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: Literal["s", "MiB"] = "s"
    baseline: str | None = None
    ratio: RatioKind | None = None
    target: Target | None = None
    stretch: Target | None = None
    #: A derived figure: the measurement of another figure, compared with this baseline.
    source: str | None = None


def _t(on: Literal["ratio", "value"], op: Literal["<=", ">="], bound: float) -> Target:
    return Target(on, op, bound)


def _memory_figures(resource: str) -> tuple[Figure, ...]:
    """Peak RSS of the worker importing 100K and 1M rows of ``resource``. The issue's memory
    targets name no resource: users is the headline (the brief), the others are held to the
    same targets."""
    fmt = "CSV" if resource == "users" else "NDJSON"
    return (
        Figure(f"import.{resource}.100k.bulkio", f"bulkio import {resource} ({fmt}), 100K"),
        Figure(f"rss.{resource}.100k", f"worker peak RSS, {resource} 100K", unit="MiB"),
        Figure(f"rss.{resource}.1m", f"worker peak RSS, {resource} 1M", unit="MiB",
               target=_t("value", "<=", 512)),
        Figure(f"rss.{resource}.growth", f"worker peak RSS(1M) / RSS(100K), {resource}",
               unit="MiB", baseline=f"rss.{resource}.100k", ratio="growth",
               target=_t("ratio", "<=", 1.3), source=f"rss.{resource}.1m"),
    )  # fmt: skip


def _check_figures(check: str, polars_label: str) -> tuple[Figure, ...]:
    """A native check against its polars equivalent, held to the issue's >= 5x."""
    return (
        Figure(f"checks.{check}.polars", polars_label),
        Figure(f"checks.{check}.native", f"native {check}, 1M", baseline=f"checks.{check}.polars",
               ratio="speedup", target=_t("ratio", ">=", 5)),
    )  # fmt: skip


#: Every figure of the table, in order. Baselines are figures too.
FIGURES: tuple[Figure, ...] = (
    Figure("import.users.copy", "psql \\copy users (CSV), 1M"),
    Figure(
        "import.users.bulkio",
        "bulkio import users (CSV), 1M, end to end",
        baseline="import.users.copy",
        ratio="time",
        target=_t("ratio", "<=", 1.5),
        stretch=_t("ratio", "<=", 0.8),
    ),
    Figure(
        "import.users.parquet",
        "bulkio import users (Parquet, one row group), 1M, end to end",
        baseline="import.users.copy",
        ratio="time",
    ),
    Figure(
        "rss.users.parquet.1m",
        "worker peak RSS, users Parquet 1M",
        unit="MiB",
        target=_t("value", "<=", 512),
    ),
    Figure(
        "import.users.zstd",
        "bulkio import users (CSV, zstd), 1M, end to end",
        baseline="import.users.copy",
        ratio="time",
    ),
    Figure(
        "rss.users.zstd.1m",
        "worker peak RSS, users CSV zstd 1M",
        unit="MiB",
        target=_t("value", "<=", 512),
    ),
    Figure("import.articles.copy", "psql \\copy articles (CSV), 1M"),
    Figure(
        "import.articles.bulkio",
        "bulkio import articles (NDJSON), 1M, end to end",
        baseline="import.articles.copy",
        ratio="time",
        target=_t("ratio", "<=", 1.5),
        stretch=_t("ratio", "<=", 0.8),
    ),
    Figure("import.comments.copy", "psql \\copy comments (CSV, FKs on), 1M"),
    Figure(
        "import.comments.copy_nofk",
        "psql \\copy comments, same table without its 2 FKs (floor), 1M",
        baseline="import.comments.copy",
        ratio="time",
    ),
    Figure(
        "import.comments.bulkio",
        "bulkio import comments (NDJSON), 1M, end to end",
        baseline="import.comments.copy",
        ratio="time",
        target=_t("ratio", "<=", 1.0),
        stretch=_t("ratio", "<=", 0.4),
    ),
    Figure("export.users.copy", "psql \\copy (SELECT users) TO, CSV, 1M"),
    Figure(
        "export.users.ndjson",
        "bulkio export users NDJSON over HTTP, 1M",
        baseline="export.users.copy",
        ratio="throughput",
        target=_t("ratio", ">=", 0.6),
        stretch=_t("ratio", ">=", 1.0),
    ),
    Figure(
        "export.users.csv",
        "bulkio export users CSV over HTTP, 1M",
        baseline="export.users.copy",
        ratio="throughput",
    ),
    *_check_figures("is_email", "polars regex is_email, 1M"),
    *_check_figures("is_uuid", "polars regex is_uuid, 1M"),
    *_check_figures("is_slug", "polars regex is_slug, 1M"),
    *_check_figures("word_count", "polars count_matches(\\S+) word_count, 1M"),
    Figure("checks.word_count.polars_split", "polars split(' ').list.len() (not equivalent), 1M"),
    Figure(
        "checks.word_count.native_vs_split",
        "native word_count vs split(' ')",
        baseline="checks.word_count.polars_split",
        ratio="speedup",
    ),
    *(fig for resource in ("users", "articles", "comments") for fig in _memory_figures(resource)),
    Figure("workers.1", "2 x 500K users at once, 1 worker process"),
    Figure(
        "workers.2",
        "2 x 500K users at once, 1 worker per core (2)",
        baseline="workers.1",
        ratio="speedup",
    ),
    Figure("reader.ndjson.clean", "read + validate clean NDJSON comments, 200K (in-process)"),
    Figure(
        "reader.ndjson.malformed",
        "read + validate NDJSON comments, every line malformed, 200K",
        baseline="reader.ndjson.clean",
        ratio="time",
        target=_t("ratio", "<=", 2),
    ),
    *(
        Figure(f"generate.{resource}", f"testdata/generate.py {resource} NDJSON, 100K, 5% defects")
        for resource in ("users", "articles", "comments")
    ),
)
FIGURE_BY_KEY = {f.key: f for f in FIGURES}


@dataclass
class Measurement:
    key: str
    #: seconds (unit "s") or MiB (unit "MiB")
    value: float
    rows: int | None = None
    rounds: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    key: str
    label: str
    unit: str
    value: float | None
    rows_per_s: float | None
    baseline: str | None
    baseline_value: float | None
    ratio_kind: str | None
    ratio: float | None
    target: str | None
    stretch: str | None
    met: bool | None
    stretch_met: bool | None
    extra: dict[str, Any]


class Recorder:
    """Measurements of one session, keyed by figure."""

    def __init__(self) -> None:
        self.measurements: dict[str, Measurement] = {}
        self.meta: dict[str, Any] = {}

    def record(
        self, key: str, value: float, *, rows: int | None = None, rounds: int = 1, **extra: Any
    ) -> None:
        if key not in FIGURE_BY_KEY:
            raise KeyError(f"unknown figure {key!r}: declare it in bench/report.py FIGURES")
        self.measurements[key] = Measurement(key, value, rows, rounds, extra)

    def rows(self) -> list[Row]:
        return [self._row(f) for f in FIGURES]

    def _row(self, fig: Figure) -> Row:
        m = self.measurements.get(fig.source or fig.key)
        base = self.measurements.get(fig.baseline) if fig.baseline else None
        value = m.value if m else None
        rows_per_s = m.rows / m.value if m and m.rows and m.value and fig.unit == "s" else None
        ratio: float | None = None
        if m and base and m.value and base.value:
            if fig.ratio in ("time", "growth"):
                ratio = m.value / base.value
            elif fig.ratio in ("throughput", "speedup"):  # rows/s over the baseline's rows/s
                ratio = ((m.rows or 1) / m.value) / ((base.rows or 1) / base.value)
        met = fig.target.met(value, ratio) if fig.target else None
        stretch_met = fig.stretch.met(value, ratio) if fig.stretch else None
        return Row(
            key=fig.key, label=fig.label, unit=fig.unit, value=value, rows_per_s=rows_per_s,
            baseline=fig.baseline, baseline_value=base.value if base else None,
            ratio_kind=fig.ratio, ratio=ratio,
            target=str(fig.target) if fig.target else None,
            stretch=str(fig.stretch) if fig.stretch else None,
            met=met, stretch_met=stretch_met, extra=dict(m.extra) if m else {},
        )  # fmt: skip


# --------------------------------------------------------------------------------- rendering


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.3f} s" if value < 1 else f"{value:.2f} s"


def _fmt_rate(rate: float | None) -> str:
    return f"{rate:,.0f}" if rate is not None else ""


def _fmt_share(extra: dict[str, Any]) -> str:
    share = extra.get("cpu_others_share")
    if share is None:
        return ""
    if extra.get("cpu_window_s", MIN_WINDOW) < MIN_WINDOW:
        return f"{share:.0%} (short)"
    return f"{share:.0%}" + (" (contended)" if share >= CONTENDED else "")


def _fmt_met(row: Row) -> str:
    if row.met is None:
        return "" if row.target is None else "n/a"
    if not row.met:
        return "MISSED"
    return (
        "met, stretch met"
        if row.stretch_met
        else ("met" if row.stretch is None else "met (stretch missed)")
    )


def table(rows: list[Row]) -> list[list[str]]:
    header = ["figure", "value", "rows/s", "baseline", "ratio", "target (stretch)", "met?",
              "others' CPU"]  # fmt: skip
    out = [header]
    for r in rows:
        target = r.target or ""
        if r.stretch:
            target += f" ({r.stretch})"
        ratio = f"{r.ratio:.2f}x {r.ratio_kind}" if r.ratio is not None else ""
        base = _fmt_value(r.baseline_value, r.unit) if r.baseline else ""
        out.append(
            [
                r.label,
                _fmt_value(r.value, r.unit),
                _fmt_rate(r.rows_per_s),
                base,
                ratio,
                target,
                _fmt_met(r),
                _fmt_share(r.extra),
            ]
        )
    return out


def render_text(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(cells: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = [
        "| " + " | ".join(esc(c) for c in cells[0]) + " |",
        "|" + "|".join("---" for _ in cells[0]) + "|",
    ]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ environment


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                      .splitlines() if line.startswith("MemTotal"))  # fmt: skip
    except (OSError, StopIteration):
        mem_kb = 0
    versions: dict[str, str] = {}
    from importlib import metadata

    for dist in ("polars", "pyarrow", "adbc-driver-postgresql", "litestar", "granian",
                 "dramatiq", "httpx"):  # fmt: skip
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }


def source_state() -> dict[str, Any]:
    status = _git("status", "--porcelain", "--", "engine", "api", "native")
    dirty = [line.split(maxsplit=1)[1] for line in status.splitlines() if line.strip()]
    return {"commit": _git("rev-parse", "--short", "HEAD"), "uncommitted": dirty}


def _describe(state: dict[str, Any]) -> str:
    dirty = len(state["uncommitted"])
    return f"commit {state['commit']}" + (
        f" plus uncommitted changes in {dirty} engine/api/native file(s)" if dirty else ""
    )


def load_results(path: Path) -> Recorder:
    """The measurements of a results file, to render its table again."""
    doc = json.loads(path.read_text())
    recorder = Recorder()
    for m in doc["measurements"]:
        recorder.record(m["key"], m["value"], rows=m["rows"], rounds=m["rounds"], **m["extra"])
    return recorder


def write_results(recorder: Recorder, started: datetime) -> tuple[str, Path]:
    rows = recorder.rows()
    cells = table(rows)
    state = source_state()
    info = {**recorder.meta, "machine": machine(), "source": state}
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
        "figures": [asdict(r) for r in rows],
        "measurements": [asdict(m) for m in recorder.measurements.values()],
        "table": cells,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latest.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    m = info["machine"]
    caption = (
        f"bulkio {_describe(state)}; {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB; "
        f"PostgreSQL {info.get('postgres', {}).get('version', '?')}; {doc['finished']}"
    )
    start = recorder.meta.get("source_at_start")
    if start and start != state:
        caption += f"\n(source changed during the run: it started at {_describe(start)})"
    (RESULTS / "latest.md").write_text(f"{caption}\n\n{render_markdown(cells)}\n")
    return f"{caption}\n\n{render_text(cells)}", path


if __name__ == "__main__":  # python bench/report.py [results.json]: the table again, as Markdown
    import sys

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "latest.json"
    print(render_markdown(table(load_results(source).rows())))
