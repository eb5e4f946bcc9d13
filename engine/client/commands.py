"""The client's commands: ``import``, ``export``, ``jobs …`` and ``login`` (click).

Each command resolves its server and token (engine/client/config.py), talks to the API
(engine/client/service.py), shows progress and tables on stderr (engine/client/display.py) and
returns its exit code (engine/client/errors.py).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import httpx
from rich.console import Console

from engine import __version__
from engine.client import config
from engine.client.direct import DirectUpload, parse_size
from engine.client.display import Output, size
from engine.client.errors import (
    ClientError,
    Exit,
    NotAllowed,
    Unreachable,
    WaitTimedOut,
)
from engine.client.follow import Follower
from engine.client.service import Service, partial_path

F = TypeVar("F", bound=Callable[..., Any])

IMPORT_FORMATS = ("csv", "ndjson", "jsonl", "json", "parquet")
EXPORT_FORMATS = ("ndjson", "csv", "json", "parquet")
REPORT_FORMATS = ("ndjson", "json", "csv")
MODES = ("upsert", "insert", "merge", "validate_only")
#: File name endings -> format, for ``-o`` of exports and error reports.
EXTENSIONS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json",
              ".parquet": "parquet"}  # fmt: skip
#: Most jobs one ``jobs list`` shows (pages of at most 100 are fetched until then).
LIST_MAX, PAGE_MAX = 1000, 100

EXIT_HELP = """\b
Exit codes:
  0  ok
  1  error: bad usage, a missing file, an unreachable server, an API error
  2  the job failed or was cancelled
  3  --timeout passed before the job ended (resume: bulkio jobs watch ID)
  4  not authenticated or not allowed (HTTP 401/403)
  5  --strict, and the job rejected records"""


@dataclass
class Env:
    """What :func:`engine.client.main` was given: overrides for tests and the docs picture."""

    console: Console | None = None
    interactive: bool | None = None
    transport: httpx.BaseTransport | None = None
    stdout: IO[str] | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class Session:
    """One command's target, service and output."""

    target: config.Target
    service: Service
    out: Output

    def command(self, *words: str) -> str:
        """A ``bulkio`` command line that reaches the same server the same way."""
        return shlex.join(["bulkio", *words, *self.target.flags()])


def _output(env: Env, as_json: bool) -> Output:
    stdout = env.stdout if env.stdout is not None else sys.stdout
    json_mode = as_json or not stdout.isatty()
    return Output(
        json_mode=json_mode, console=env.console, interactive=env.interactive, stdout=stdout
    )


@contextmanager
def session(
    ctx: click.Context, url: str | None, token: str | None, profile: str | None, as_json: bool
) -> Iterator[Session]:
    env: Env = ctx.find_object(Env) or Env()
    target = config.resolve(url, token, profile, env.environ)
    with Service(target, env.transport) as service:
        yield Session(target, service, _output(env, as_json))


def connection(f: F) -> F:
    """--url, --token, --profile and --json, on every command that talks to the API."""
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout (also when "
        "stdout is not a terminal)."
    )(f)  # fmt: skip
    f = click.option(
        "--profile",
        metavar="NAME",
        help="Profile of the config file (default: $BULKIO_PROFILE, else 'default').",
    )(f)
    f = click.option(
        "--token", metavar="TOKEN", help="API token (default: $BULKIO_TOKEN, else the profile)."
    )(f)
    f = click.option(
        "--url", metavar="URL", help="Server, e.g. http://127.0.0.1:8000 (default: $BULKIO_URL, "
        "else the profile)."
    )(f)  # fmt: skip
    return f


def _job_exit(view: dict[str, Any], strict: bool) -> int:
    status = view.get("status")
    if status in ("failed", "cancelled"):
        return Exit.JOB_ENDED
    if status == "completed" and strict and int(view.get("failed") or 0) > 0:
        return Exit.REJECTED
    return Exit.OK


def _follow(s: Session, view: dict[str, Any], timeout: float | None) -> dict[str, Any] | int:
    """Show the job's progress until it ends: its final view, or the exit code of a wait that
    timed out (3) or was interrupted (130)."""
    job_id = str(view["job_id"])
    resume = s.command("jobs", "watch", job_id)
    follower = Follower(s.service, view, timeout, resume_hint=resume)
    try:
        with s.out.job_bar(view) as bar:
            for update in follower.updates():
                bar.update(update)
    except WaitTimedOut as exc:
        s.out.error(str(exc))
        s.out.emit(exc.job)
        return Exit.TIMED_OUT
    except KeyboardInterrupt:
        s.out.say(f"stopped watching; job {job_id} goes on. Resume with: {resume}")
        return 130
    return s.service.job(job_id)


def follow_job(s: Session, view: dict[str, Any], timeout: float | None, strict: bool) -> int:
    """Follow the job, then show its summary and print its view; the exit code it earns."""
    final = _follow(s, view, timeout)
    if isinstance(final, int):
        return final
    job_id = str(final["job_id"])
    report = None
    if final.get("kind") == "import":
        report = s.command("jobs", "errors", job_id, "-o", f"errors-{job_id[:8]}.csv")
    s.out.summary(final, report)
    code = _job_exit(final, strict)
    if code == Exit.REJECTED:
        s.out.error(f"{final.get('failed')} records were rejected (--strict)")
    s.out.emit(final)
    return code


def _readable_file(path: Path) -> Path:
    if not path.exists():
        raise ClientError(f"{path}: no such file")
    if not path.is_file():
        raise ClientError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise ClientError(f"{path}: not readable (permission denied)")
    return path


def _check_token(s: Session) -> None:
    """Fail before a long upload when the token is refused (a 403 here only means it cannot
    list jobs, which an import does not need)."""
    try:
        s.service.jobs_page({"limit": "1"})
    except NotAllowed as exc:
        if exc.status == 401:
            raise


def _format_of(path: Path, given: str | None, allowed: tuple[str, ...]) -> tuple[str, bool]:
    """The format a file name asks for (``given`` wins) and whether it ends with ``.gz``."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    stem = Path(name[:-3] if gz else name)
    fmt = given or EXTENSIONS.get(stem.suffix, "ndjson")
    return (fmt if fmt in allowed else "ndjson"), gz


@contextmanager
def _target_file(path: Path) -> Iterator[IO[bytes]]:
    """A file written beside ``path`` and renamed to it once complete ('-': stdout)."""
    if str(path) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    part = partial_path(path)
    try:
        with part.open("wb") as fh:
            yield fh
        os.replace(part, path)
    except OSError as exc:
        raise ClientError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        part.unlink(missing_ok=True)


def _download(
    s: Session, url: str, path: Path, label: str, params: Any = None, authorized: bool = True
) -> tuple[int, httpx.Headers]:
    with s.out.transfer(label, None) as bar, _target_file(path) as fh:
        headers = s.service.download(
            url, fh, bar.start, bar.advance, f"downloading to {path}", params, authorized
        )
        bar.finish()
    return bar.done, headers


# ---------------------------------------------------------------------- the commands


@click.group(
    name="bulkio",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_HELP,
)
@click.version_option(__version__, prog_name="bulkio", message="%(prog)s %(version)s")
def cli() -> None:
    """Bulk import and export of users, articles and comments over the bulkio HTTP API.

    \b
    Server and token: --url / --token / --profile, then $BULKIO_URL / $BULKIO_TOKEN,
    then the profile ($BULKIO_PROFILE, else 'default') that `bulkio login` wrote to
    ~/.config/bulkio/config.toml ($XDG_CONFIG_HOME/bulkio/config.toml).

    Progress bars and tables go to stderr, only when it is a terminal. With --json, or when
    stdout is not a terminal, stdout gets one JSON document and nothing else. NO_COLOR is
    honoured.
    """


@cli.command("import", epilog=EXIT_HELP, short_help="Upload a file and follow its import job.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-r", "--resource", required=True, help="users, articles or comments.")
@click.option(
    "--format", "fmt", type=click.Choice(IMPORT_FORMATS), help="Default: from the file name."
)
@click.option("--mode", type=click.Choice(MODES), help="Default: upsert.")
@click.option("--idempotency-key", metavar="KEY", help="Retry safely: the same key and file "
              "give the same job.")  # fmt: skip
@click.option("--max-errors", type=click.IntRange(min=0), help="Stop the job after this many "
              "rejected records.")  # fmt: skip
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Follow the job to its end."
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop waiting after this long (exit 3); the job goes on.")  # fmt: skip
@click.option("--strict", is_flag=True, help="Exit 5 when the job rejected records.")
@click.option("--direct/--no-direct", default=None, help="Send the file straight to "
              "storage, resumably (default: above --direct-threshold).")  # fmt: skip
@click.option("--direct-threshold", default="64MiB", show_default=True, metavar="SIZE",
              help="Larger files go through an upload session (e.g. 512MiB, 1G).")  # fmt: skip
@connection
@click.pass_context
def import_(
    ctx: click.Context,
    file: Path,
    resource: str,
    fmt: str | None,
    mode: str | None,
    idempotency_key: str | None,
    max_errors: int | None,
    wait: bool,
    timeout: float | None,
    strict: bool,
    direct: bool | None,
    direct_threshold: str,
    url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
) -> int:
    """Upload FILE (CSV, NDJSON or a JSON array; gzip too) and follow its import job.

    Shows an upload bar, then the job's bar (records processed and rejected, rows/s), then a
    summary with the first errors and the command that downloads the whole error report.

    Files above --direct-threshold go straight to storage through an upload session: after a
    network error the client asks the server what arrived and sends only the rest.
    """
    path = _readable_file(file)
    try:
        threshold = parse_size(direct_threshold)
    except ValueError as exc:
        raise ClientError(f"--direct-threshold: {exc}") from None
    with session(ctx, url, token, profile, as_json) as s:
        _check_token(s)
        fields = {"resource": resource}
        if fmt:
            fields["format"] = fmt
        if mode:
            fields["mode"] = mode
        if max_errors is not None:
            fields["max_errors"] = str(max_errors)
        try:
            if direct or (direct is None and path.stat().st_size > threshold):
                view = DirectUpload(s.service, s.out, path).run(fields, idempotency_key)
            else:
                with s.out.transfer("upload", path.stat().st_size) as bar:
                    view = s.service.create_import(path, fields, bar.advance, idempotency_key)
                    bar.finish()
        except KeyboardInterrupt:
            s.out.say("upload interrupted: no job was created")
            return 130
        job_id = str(view["job_id"])
        if view.get("replayed") and idempotency_key:
            s.out.say(f"Idempotency-Key {idempotency_key!r} was used before: job {job_id}")
        if not wait:
            s.out.say(
                f"job {job_id} {view.get('status')}; follow it with: "
                + s.command("jobs", "watch", job_id)
            )
            s.out.emit(view)
            return Exit.OK
        return follow_job(s, view, timeout, strict)


@cli.command("export", epilog=EXIT_HELP, short_help="Export a resource to a file.")
@click.argument("resource")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, allow_dash=True),
              help="File to write ('-': stdout).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS),
              help="Default: from the file name, else ndjson.")  # fmt: skip
@click.option("--filter", "filters", multiple=True, metavar="NAME=VALUE",
              help="A filter of the resource, e.g. role=admin (repeatable).")  # fmt: skip
@click.option("--fields", metavar="A,B", help="Only these fields, in this order.")
@click.option("--gzip", is_flag=True, help="Write a .gz file (also when -o ends with .gz).")
@click.option("--async", "as_job", is_flag=True,
              help="Run an export job, wait for it, then download its file.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="--async: stop waiting after this long (exit 3).")  # fmt: skip
@connection
@click.pass_context
def export(
    ctx: click.Context,
    resource: str,
    output: Path,
    fmt: str | None,
    filters: tuple[str, ...],
    fields: str | None,
    gzip: bool,
    as_job: bool,
    timeout: float | None,
    url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
) -> int:
    """Export RESOURCE to a file: streamed (a byte bar), or with --async as a job."""
    fmt, gz = _format_of(output, fmt, EXPORT_FORMATS)
    compression = "gzip" if gzip or gz else None
    pairs: list[tuple[str, str]] = []
    for item in filters:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ClientError(f"--filter {item!r}: expected NAME=VALUE, e.g. role=admin")
        pairs.append((name.strip(), value))
    names = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    with session(ctx, url, token, profile, as_json) as s:
        if as_job:
            return _export_job(s, resource, fmt, compression, names, pairs, output, timeout)
        params: list[tuple[str, str]] = [("resource", resource), ("format", fmt), *pairs]
        if names:
            params.append(("fields", ",".join(names)))
        if compression:
            params.append(("compression", compression))
        done, _ = _download(s, "/v1/exports", output, "export", params)
        if str(output) != "-":
            s.out.say(f"wrote {size(done)} to {output}")
            s.out.emit(
                {
                    "resource": resource,
                    "format": fmt,
                    "compression": compression,
                    "fields": names,
                    "filters": dict(pairs),
                    "file": str(output),
                    "bytes": done,
                }
            )
        return Exit.OK


def _export_job(
    s: Session,
    resource: str,
    fmt: str,
    compression: str | None,
    names: list[str] | None,
    pairs: list[tuple[str, str]],
    output: Path,
    timeout: float | None,
) -> int:
    filters: dict[str, Any] = {}
    for name, value in pairs:  # a repeated filter: its values joined, as the stream route does
        filters[name] = f"{filters[name]},{value}" if name in filters else value
    body: dict[str, Any] = {"resource": resource, "format": fmt, "filters": filters}
    if names:
        body["fields"] = names
    if compression:
        body["compression"] = compression
    view = s.service.create_export(body)
    job_id = str(view["job_id"])
    final = _follow(s, view, timeout)
    if isinstance(final, int):
        return final
    s.out.summary(final, None)
    if final.get("status") != "completed":
        s.out.emit(final)
        return _job_exit(final, strict=False)
    link = final.get("download_url")
    if not link:
        raise ClientError(f"export job {job_id} completed without a download_url")
    done, _ = _download(s, str(link), output, "download", authorized=False)
    if str(output) != "-":
        s.out.say(f"wrote {size(done)} to {output}")
    s.out.emit(final)
    return Exit.OK


# ---------------------------------------------------------------------- jobs


@cli.group("jobs", epilog=EXIT_HELP, short_help="List, show, watch, cancel jobs; error reports.")
def jobs_group() -> None:
    """List, show, watch and cancel jobs; download an import's error report."""


@jobs_group.command("list")
@click.option("--status", type=click.Choice(("queued", "running", "completed", "failed",
                                             "cancelled")))  # fmt: skip
@click.option("--kind", type=click.Choice(("import", "export")))
@click.option("--resource", help="users, articles or comments.")
@click.option("--limit", type=click.IntRange(1, LIST_MAX), default=20, show_default=True)
@click.option("--cursor", help="Continue after an earlier list (its next_cursor).")
@connection
@click.pass_context
def jobs_list(
    ctx: click.Context,
    status: str | None,
    kind: str | None,
    resource: str | None,
    limit: int,
    cursor: str | None,
    url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
) -> int:
    """Jobs, newest first (a table; --json: {"jobs": [...], "next_cursor": ...})."""
    with session(ctx, url, token, profile, as_json) as s:
        found: list[dict[str, Any]] = []
        while True:
            params = {"limit": str(min(PAGE_MAX, limit - len(found)))}
            params.update({k: v for k, v in (("status", status), ("kind", kind),
                           ("resource", resource), ("cursor", cursor)) if v})  # fmt: skip
            page = s.service.jobs_page(params)
            found += page.get("jobs") or []
            cursor = page.get("next_cursor")
            if not cursor or len(found) >= limit:
                break
        s.out.jobs(found, cursor)
        s.out.emit({"jobs": found, "next_cursor": cursor})
        return Exit.OK


@jobs_group.command("show")
@click.argument("job_id", metavar="ID")
@connection
@click.pass_context
def jobs_show(
    ctx: click.Context,
    job_id: str,
    url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
) -> int:
    """A job's status, counters and first errors."""
    with session(ctx, url, token, profile, as_json) as s:
        view = s.service.job(job_id)
        report = None
        if view.get("kind") == "import":
            report = s.command("jobs", "errors", job_id, "-o", f"errors-{job_id[:8]}.csv")
        s.out.summary(view, report, final=False)
        s.out.emit(view)
        return Exit.OK


@jobs_group.command("watch", epilog=EXIT_HELP)
@click.argument("job_id", metavar="ID")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop waiting after this long (exit 3).")  # fmt: skip
@click.option("--strict", is_flag=True, help="Exit 5 when the job rejected records.")
@connection
@click.pass_context
def jobs_watch(
    ctx: click.Context,
    job_id: str,
    timeout: float | None,
    strict: bool,
    url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
) -> int:
    """Follow a job until it ends (its event stream; polling where there is none)."""
    with session(ctx, url, token, profile, as_json) as s:
        return follow_job(s, s.service.job(job_id), timeout, strict)


@jobs_group.command("cancel")
@click.argument("job_id", metavar="ID")
@connection
@click.pass_context
def jobs_cancel(
    ctx: click.Context,
    job_id: str,
    url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
) -> int:
    """Cancel a job: a queued one at once, a running one at its next batch."""
    with session(ctx, url, token, profile, as_json) as s:
        view = s.service.cancel(job_id)
        if view.get("status") == "cancelled":
            s.out.say(f"job {job_id} cancelled")
        else:
            s.out.say(
                f"job {job_id} stops at its next batch; follow it with: "
                + s.command("jobs", "watch", job_id)
            )
        s.out.emit(view)
        return Exit.OK


@jobs_group.command("errors")
@click.argument("job_id", metavar="ID")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, allow_dash=True),
              help="File to write ('-': stdout).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS),
              help="Default: from the file name, else ndjson.")  # fmt: skip
@connection
@click.pass_context
def jobs_errors(
    ctx: click.Context,
    job_id: str,
    output: Path,
    fmt: str | None,
    url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
) -> int:
    """Download an import job's complete error report."""
    fmt, _ = _format_of(output, fmt, REPORT_FORMATS)
    with session(ctx, url, token, profile, as_json) as s:
        done, headers = _download(
            s, f"/v1/imports/{job_id}/errors", output, "errors", {"format": fmt}
        )
        truncated = headers.get("bulkio-errors-truncated") == "true"
        if truncated:
            s.out.say(
                "the server stored only the first error rows of this job "
                "(BULKIO_MAX_ERROR_ROWS); the report's last record says how many there were"
            )
        if str(output) != "-":
            s.out.say(f"wrote {size(done)} to {output}")
            s.out.emit(
                {"job_id": job_id, "format": fmt, "file": str(output), "bytes": done,
                 "truncated": truncated}
            )  # fmt: skip
        return Exit.OK


# ---------------------------------------------------------------------- login


@cli.command("login", short_help="Save a server and token as a named profile.")
@click.option("--profile", metavar="NAME", help="Default: $BULKIO_PROFILE, else 'default'.")
@click.option("--url", metavar="URL", help="The server (asked for when not given).")
@click.option("--token", metavar="TOKEN", help="The API token ('-': read from stdin; asked for, "
              "hidden, when not given).")  # fmt: skip
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the token against the server before saving it.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.pass_context
def login(
    ctx: click.Context,
    profile: str | None,
    url: str | None,
    token: str | None,
    verify: bool,
    as_json: bool,
) -> int:
    """Save a server and token as a named profile of the config file (mode 0600)."""
    env: Env = ctx.find_object(Env) or Env()
    out = _output(env, as_json)
    name = profile or env.environ.get(config.PROFILE_VAR) or config.DEFAULT_PROFILE
    interactive = sys.stdin.isatty()
    if not url:
        if not interactive:
            raise ClientError("--url is required when stdin is not a terminal")
        url = click.prompt("Server URL", default=env.environ.get(config.URL_VAR) or None,
                           err=True)  # fmt: skip
    url = config.check_url(str(url), "--url")
    if token == "-":
        token = sys.stdin.readline().strip()
    elif not token:
        if not interactive:
            raise ClientError("--token is required when stdin is not a terminal (or --token -)")
        token = click.prompt("API token", hide_input=True, err=True)
    token = str(token).strip()
    if not token:
        raise ClientError("the token is empty")
    if verify:
        target = config.Target(url, token, name, "--url", "--token")
        with Service(target, env.transport) as service:
            try:
                service.jobs_page({"limit": "1"})
            except NotAllowed as exc:
                if exc.status == 401:
                    raise NotAllowed(401, f"{url} refused this token: {exc.detail}") from exc
                out.say(f"note: the token is valid but may not list jobs ({exc.detail})")
            except Unreachable as exc:
                raise ClientError(f"{exc} (save anyway with --no-verify)") from exc
    path = config.config_path(env.environ)
    config.save_profile(path, name, url, token)
    out.say(f"saved profile {name!r} ({url}) in {path}")
    out.emit({"profile": name, "url": url, "config": str(path)})
    return Exit.OK
