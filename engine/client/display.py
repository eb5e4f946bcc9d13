"""What a person sees, and what a script reads.

* stderr, through one rich Console: progress bars and tables only when it is a terminal (rich
  also honours ``NO_COLOR`` and ``TERM=dumb``); messages and errors always, as plain lines.
* stdout: with ``--json``, or when stdout is not a terminal, exactly one JSON document (the job
  view, the job list, what a download wrote), and nothing else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from engine.client.follow import Update

#: Errors of a job shown under its summary (the view holds up to BULKIO_INLINE_ERRORS).
SHOWN_ERRORS = 5
#: Characters of every bar (the same for all, so that successive bars line up).
BAR_WIDTH = 32
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "blue",
}


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover - unreachable


def _count(n: Any) -> str:
    return f"{int(n):,}" if isinstance(n, int) else "-"


def _seconds(ms: Any) -> str:
    return f"{ms / 1000:.1f} s" if isinstance(ms, int | float) else "-"


class Output:
    def __init__(
        self,
        *,
        json_mode: bool,
        console: Console | None = None,
        interactive: bool | None = None,
        stdout: IO[str] | None = None,
    ) -> None:
        self.err = console if console is not None else Console(stderr=True)
        self.interactive = self.err.is_terminal if interactive is None else interactive
        self.json_mode = json_mode
        self.stdout = stdout if stdout is not None else sys.stdout

    # ------------------------------------------------------------------ text

    def emit(self, document: Any) -> None:
        """The command's one JSON document on stdout (``--json`` or a piped stdout)."""
        if self.json_mode:
            self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            self.stdout.flush()

    def say(self, text: str, style: str | None = None) -> None:
        """A message on stderr, never wrapped (commands in it must stay copyable)."""
        self.err.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def error(self, text: str) -> None:
        self.say(f"error: {text}", style="bold red")

    # ------------------------------------------------------------------ bars

    @contextmanager
    def transfer(self, label: str, total: int | None) -> Iterator[TransferBar]:
        """A byte bar (size, rate, ETA); a pulsing one while the total is unknown."""
        if not self.interactive:
            yield TransferBar(None, TaskID(0))
            return
        progress = Progress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(bar_width=BAR_WIDTH),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(elapsed_when_finished=True),
            console=self.err,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        with progress:
            task = progress.add_task(label, total=total)
            yield TransferBar(progress, task)

    @contextmanager
    def job_bar(self, view: dict[str, Any]) -> Iterator[JobBar]:
        """The job's bar: its share of the file read (imports) and its counters."""
        bar = JobBar(self, None, TaskID(0), str(view.get("kind", "job")))
        if not self.interactive:
            yield bar
            return
        progress = Progress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(bar_width=BAR_WIDTH),
            TaskProgressColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(elapsed_when_finished=True),
            console=self.err,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        with progress:
            bar.progress = progress
            bar.task = progress.add_task(bar.kind, total=None, counts="", rate="")
            yield bar

    # ------------------------------------------------------------------ tables

    def summary(
        self, view: dict[str, Any], report_command: str | None, *, final: bool = True
    ) -> None:
        """The job as a table, its first errors, and the command that downloads them all; a
        single line when stderr is not a terminal. ``final=False`` (``jobs show``): nothing
        with --json or a piped stdout, where the JSON is the whole answer."""
        if not final and self.json_mode:
            return
        job_id, status = view.get("job_id"), str(view.get("status"))
        rejected = int(view.get("failed") or 0)
        if not self.interactive:
            line = f"job {job_id} {status}: {_count(view.get('processed'))} records"
            if view.get("kind") == "import":
                line += f", {_count(view.get('successful'))} accepted, {_count(rejected)} rejected"
            if view.get("error"):
                line += f"; {view['error']}"
            self.say(line)
            if rejected and report_command:
                self.say(f"error report: {report_command}")
            return
        self.err.print(_job_table(view))
        errors = view.get("errors") or []
        if errors:
            self.err.print(_errors_table(errors[:SHOWN_ERRORS], int(view.get("error_count") or 0)))
        if rejected and report_command:
            self.err.print(
                f"The whole error report ({_count(view.get('error_count'))} errors):",
                highlight=False,
            )
            self.err.print(f"  [bold]{escape(report_command)}[/]", soft_wrap=True, highlight=False)

    def jobs(self, jobs: list[dict[str, Any]], next_cursor: str | None) -> None:
        """The job list as a table (not with --json or a piped stdout: the JSON is the list)."""
        if not self.interactive or self.json_mode:
            return
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for name, justify in (
            ("ID", "left"), ("KIND", "left"), ("RESOURCE", "left"), ("STATUS", "left"),
            ("RECORDS", "right"), ("REJECTED", "right"), ("CREATED (UTC)", "left"),
        ):  # fmt: skip
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        table.add_column("FILE", overflow="ellipsis", no_wrap=True)
        for job in jobs:
            status = str(job.get("status"))
            table.add_row(
                str(job.get("job_id")),
                str(job.get("kind")),
                str(job.get("resource")),
                f"[{STATUS_STYLE.get(status, '')}]{status}[/]",
                _count(job.get("processed")),
                _count(job.get("failed")) if job.get("kind") == "import" else "",
                str(job.get("created", ""))[:16].replace("T", " "),
                escape(str(job.get("file_name") or "")),
            )
        self.err.print(table if jobs else "No jobs.")
        if next_cursor:
            self.err.print(f"[dim]more: --cursor {next_cursor}[/]", soft_wrap=True)


def _job_table(view: dict[str, Any]) -> Table:
    table = Table(box=box.ROUNDED, show_header=False, title_justify="left", pad_edge=True)
    table.add_column(style="bold")
    table.add_column()
    status = str(view.get("status"))
    kind = str(view.get("kind"))
    table.add_row("Job", str(view.get("job_id")))
    table.add_row("Status", f"[{STATUS_STYLE.get(status, '')}]{status}[/]")
    what = [view.get("resource"), view.get("format"), view.get("mode")]
    table.add_row("Resource", escape(" · ".join(str(w) for w in what if w)))
    if view.get("file_name"):
        table.add_row("File", escape(str(view["file_name"])))
    if kind == "import":
        table.add_row("Records", _count(view.get("processed")))
        accepted = (
            f"{_count(view.get('successful'))} (inserted {_count(view.get('inserted_records'))}, "
            f"updated {_count(view.get('updated_records'))})"
        )
        table.add_row("Accepted", accepted)
        failed = int(view.get("failed") or 0)
        table.add_row(
            "Rejected",
            f"[{'red' if failed else 'green'}]{_count(failed)}[/] records, "
            f"{_count(view.get('error_count'))} errors",
        )
    else:
        table.add_row("Rows", _count(view.get("processed")))
        table.add_row("Size", size(view.get("result_bytes")))
    rate = view.get("rows_per_sec")
    timing = _seconds(view.get("duration_ms"))
    if isinstance(rate, int | float):
        timing += f" · {rate:,.0f} rows/s"
    table.add_row("Duration", timing)
    if view.get("error"):
        table.add_row("Error", f"[red]{escape(str(view['error']))}[/]")
    for warning in view.get("warnings") or []:
        table.add_row("Warning", f"[yellow]{escape(str(warning))}[/]")
    return table


def _errors_table(errors: list[dict[str, Any]], total: int) -> Table:
    title = f"First {len(errors)} of {total:,} errors" if total > len(errors) else "Errors"
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for name, justify in (("row", "right"), ("line", "right"), ("field", "left"),
                          ("code", "left"), ("message", "left")):  # fmt: skip
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    table.add_column("value", overflow="ellipsis", no_wrap=True, max_width=32)
    for e in errors:
        value = e.get("value")
        table.add_row(
            str(e.get("row") or ""),
            str(e.get("line") or ""),
            escape(str(e.get("field") or "")),
            f"[magenta]{escape(str(e.get('code')))}[/]",
            escape(str(e.get("message", ""))),
            escape(repr(value) if isinstance(value, str) else ""),
        )
    return table


class TransferBar:
    def __init__(self, progress: Progress | None, task: TaskID) -> None:
        self.progress = progress
        self.task = task
        self.done = 0

    def start(self, total: int | None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done)

    def finish(self) -> None:
        """At 100 %: the total becomes what was moved (a pulsing bar ends full too)."""
        if self.progress is not None:
            self.progress.update(self.task, total=max(self.done, 1), completed=max(self.done, 1))


class JobBar:
    def __init__(self, out: Output, progress: Progress | None, task: TaskID, kind: str) -> None:
        self.out = out
        self.progress = progress
        self.task = task
        self.kind = kind

    def update(self, u: Update) -> None:
        if u.note:
            style = "red" if u.status == "failed" else "yellow"
            text = f"{u.what}: {u.note}"
            if self.progress is not None:
                self.progress.console.print(text, style=style, markup=False, highlight=False)
            else:
                self.out.say(text)
        if self.progress is None:
            return
        if self.kind == "import":
            counts = f"{u.processed:,} records · {u.failed:,} rejected"
        else:
            counts = f"{u.processed:,} rows · {size(u.bytes_read)}"
        rate = f"{u.rows_per_sec:,.0f} rows/s" if u.rows_per_sec else ""
        total, done = u.total_bytes, u.bytes_read
        if u.status == "completed":  # the whole file was read: the bar ends full
            total = done = max(total or u.bytes_read or u.processed, 1)
        elif u.terminal:
            total = total or max(done, 1)
        self.progress.update(
            self.task,
            description=self.kind if u.status == "running" else u.status,
            total=total,
            completed=done,
            counts=counts,
            rate=rate,
        )
