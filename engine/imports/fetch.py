"""Imports from a URL: the worker streams the file at the job's ``source_url`` into storage, and
the runner then reads the stored object exactly as it reads an upload.

So a fetch happens once per job, before the first batch: checkpoints, resuming and the reader's
memory bound are the upload path's own. Storage writes an object only when it is complete (S3:
a multipart upload completes; the local store: a staging file is renamed), so an attempt that
finds the object stored does not fetch again, and one that died during a fetch left nothing
behind and starts it over.

The fetch goes through the SSRF guard (:mod:`engine.netguard`), checked again here since DNS
answers change after the API's check: the host is resolved once, every address checked, the
connection pinned to the checked one; each redirect (at most :data:`MAX_REDIRECTS`) is checked
and pinned in turn. Limits: BULKIO_MAX_UPLOAD_BYTES (a larger Content-Length is refused before a
byte is read, a body that grows past it stops there), BULKIO_URL_IMPORT_TIMEOUT_SECONDS (to
connect, and for each next piece of the answer) and BULKIO_URL_IMPORT_DEADLINE_SECONDS (the
whole fetch). Every failure is a :class:`FetchError` (a :class:`~engine.errors.FileError`: the
job fails with its message) naming the cause; storage errors are not, and retry like any other.

While the fetch runs, a thread of its own (:class:`_Pulse`) calls the runner's progress hook
(which extends the lease, and raises on a cancel, a shutdown or a lost lease) and enforces the
deadline; when either says stop, it cuts the connection, so a stalled server cannot hold a
worker that is asked to stop.
"""

from __future__ import annotations

import http
import http.client
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from engine import __version__, jobs, netguard, source_url
from engine.context import JobContext
from engine.errors import FileError
from engine.settings import Settings
from engine.storage import Storage

log = logging.getLogger("bulkio.fetch")

#: Redirects followed, each checked again, before the fetch fails.
MAX_REDIRECTS = 5
#: Bytes read from the connection at a time (the storage writer buffers 8 MiB).
CHUNK = 1024 * 1024
#: How often the pulse thread extends the lease (through the hook, at most once a second), looks
#: for a stop, and checks the deadline.
PULSE_SECONDS = 0.25
#: What the fetch asks for; ``Accept-Encoding: identity`` is http.client's own.
HEADERS = {
    "User-Agent": f"bulkio/{__version__} (import from URL)",
    "Accept": "text/csv, application/x-ndjson, application/json, */*;q=0.5",
}


class FetchError(FileError):
    """Raised when the file at a source URL cannot be fetched: refused address or scheme, too many
    redirects, an HTTP status other than 200, too large, too slow, a TLS or connection error, an
    unknown format. The message names the cause; the job fails with it."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one fetch may take."""

    max_bytes: int
    #: Seconds to connect, and to wait for each next piece of the answer.
    timeout: float
    #: Seconds for the whole fetch, redirects included.
    deadline: float
    max_redirects: int = MAX_REDIRECTS

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_upload_bytes,
            settings.url_import_timeout_seconds,
            settings.url_import_deadline_seconds,
        )


@dataclass(slots=True)
class Answer:
    """A 200 answer whose body is still to be read."""

    response: netguard.Response
    #: Where it came from, after redirects.
    url: str
    #: Its Content-Length, when it sent one.
    length: int | None
    content_type: str | None


class _Pulse:
    """Calls ``on_progress`` every :data:`PULSE_SECONDS` in a thread of its own, and checks the
    deadline, while the fetching thread blocks on the network. When the hook raises (cancel,
    shutdown, lost lease) or the deadline passes, the connection in use is cut (and again
    every pulse, should a new one open), and :meth:`check` raises in the fetching thread."""

    def __init__(self, on_progress: Callable[[], None], limits: Limits) -> None:
        self._on_progress = on_progress
        self._limits = limits
        self.deadline_at = time.monotonic() + limits.deadline
        self.stopped: BaseException | None = None
        self.expired = False
        self._cut: Callable[[], None] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bulkio-fetch-pulse", daemon=True)

    def __enter__(self) -> _Pulse:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def attach(self, cut: Callable[[], None]) -> None:
        """The connection now in use (``netguard.open_target(on_open=...)``)."""
        self._cut = cut
        if self.stopped is not None or self.expired:
            cut()

    def _run(self) -> None:
        while not self._done.wait(PULSE_SECONDS):
            if self.stopped is None and not self.expired:
                if time.monotonic() >= self.deadline_at:
                    self.expired = True
                else:
                    try:
                        self._on_progress()
                    except BaseException as exc:  # handed over to the fetching thread
                        self.stopped = exc
            if (self.stopped is not None or self.expired) and self._cut is not None:
                self._cut()

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()

    def check(self) -> None:
        """Raise what stopped the fetch, if anything did."""
        if self.stopped is not None:
            raise self.stopped
        if self.expired or self.remaining() <= 0:
            self.expired = True
            raise FetchError(
                f"the fetch took longer than {self._limits.deadline:g} s "
                "(BULKIO_URL_IMPORT_DEADLINE_SECONDS)"
            )


def _refused(exc: netguard.NetGuardError, url: str, hop: int) -> FetchError:
    what = "the source URL" if hop == 0 else f"redirect {hop} (to {source_url.shown(url)})"
    return FetchError(f"{what} was refused: {exc}")


def _failure(exc: BaseException, url: str, limits: Limits, pulse: _Pulse) -> BaseException:
    """The error to raise for a network failure while talking to ``url``."""
    pulse.check()  # a cut made by the pulse: what made it
    where = source_url.shown(url)
    if isinstance(exc, TimeoutError):
        return FetchError(
            f"{where} sent nothing for {limits.timeout:g} s (BULKIO_URL_IMPORT_TIMEOUT_SECONDS)"
        )
    return FetchError(f"could not fetch {where}: {netguard.describe(exc)}")


def _status(response: netguard.Response) -> str:
    try:
        return f"HTTP {response.status} {http.HTTPStatus(response.status).phrase}"
    except ValueError:
        return f"HTTP {response.status}"


def _open(
    url: str,
    policy: netguard.Policy,
    limits: Limits,
    pulse: _Pulse,
    resolver: netguard.Resolver = netguard.system_resolver,
) -> Answer:
    """Send the GET, following redirects (each hop checked and pinned again), up to a 200
    whose Content-Length, if any, is within ``limits.max_bytes``."""
    current = url
    for hop in range(limits.max_redirects + 1):
        pulse.check()
        try:
            target = netguard.check_url(current, policy, resolver)
        except netguard.NetGuardError as exc:
            raise _refused(exc, current, hop) from None
        try:
            response = netguard.open_target(
                target, headers=HEADERS, timeout=limits.timeout, on_open=pulse.attach
            )
        except (OSError, http.client.HTTPException) as exc:
            raise _failure(exc, current, limits, pulse) from None
        if response.status in netguard.REDIRECTS:
            location = response.headers.get("location")
            response.close()
            if not location:
                raise FetchError(
                    f"{source_url.shown(current)} answered {_status(response)} without a Location"
                )
            current = urljoin(current, location.strip())
            continue
        if response.status != 200:
            response.close()
            raise FetchError(f"{source_url.shown(current)} answered {_status(response)}")
        length = _content_length(response)
        if length is not None and length > limits.max_bytes:
            response.close()
            raise FetchError(
                f"{source_url.shown(current)} is {length} bytes (Content-Length), more than "
                f"BULKIO_MAX_UPLOAD_BYTES ({limits.max_bytes})"
            )
        return Answer(response, current, length, response.headers.get("content-type"))
    raise FetchError(
        f"more than {limits.max_redirects} redirects (the limit); the last one to "
        f"{source_url.shown(current)}"
    )


def _content_length(response: netguard.Response) -> int | None:
    raw = response.headers.get("content-length")
    if raw is None or response.headers.get("transfer-encoding"):
        return None
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _stream(answer: Answer, write: Callable[[bytes], Any], limits: Limits, pulse: _Pulse) -> int:
    """Copy the answer's body to ``write``, chunk by chunk; its size."""
    size = 0
    while True:
        pulse.check()
        try:
            chunk = answer.response.read(CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise _failure(exc, answer.url, limits, pulse) from None
        if not chunk:
            break
        size += len(chunk)
        if size > limits.max_bytes:
            raise FetchError(
                f"{source_url.shown(answer.url)} sent more than BULKIO_MAX_UPLOAD_BYTES "
                f"({limits.max_bytes}) bytes"
            )
        write(chunk)
    pulse.check()  # a cut connection ends like a complete one when the answer has no length
    where = source_url.shown(answer.url)
    if answer.length is not None and size < answer.length:
        raise FetchError(f"{where} closed the connection after {size} of {answer.length} bytes")
    if size == 0:
        raise FetchError(f"the file at {where} is empty")
    return size


def fetch(
    url: str,
    policy: netguard.Policy,
    limits: Limits,
    on_progress: Callable[[], None],
    start: Callable[[Answer], Callable[[bytes], object]],
    resolver: netguard.Resolver = netguard.system_resolver,
) -> tuple[Answer, int]:
    """GET ``url`` through the guard, following redirects (each hop checked and pinned again);
    on a 200 within the limits, ``start(answer)`` says where its body goes (it may refuse by
    raising), and the body is copied there chunk by chunk. ``on_progress`` is called every
    :data:`PULSE_SECONDS` from another thread meanwhile; what it raises ends the fetch (the
    connection is cut) and is raised here. Returns the answer and its body's size."""
    with _Pulse(on_progress, limits) as pulse:
        answer = _open(url, policy, limits, pulse, resolver)
        with answer.response:
            write = start(answer)
            return answer, _stream(answer, write, limits, pulse)


def _stored_size(storage: Storage, key: str) -> int | None:
    try:
        return storage.size(key)
    except FileNotFoundError:
        return None


def ensure_source(
    ctx: JobContext,
    job: jobs.Job,
    on_progress: Callable[[], None],
    resolver: netguard.Resolver = netguard.system_resolver,
) -> str:
    """Make sure the file at the job's ``source_url`` is stored whole under its object key
    (fetched now, unless an earlier attempt stored it); the format to read it in. The job's
    format and size are saved as soon as they are known."""
    fmt: str = job.format
    stored = _stored_size(ctx.storage, job.source_key)
    if stored is not None and fmt != source_url.PENDING_FORMAT:
        if job.total_bytes != stored:
            jobs.set_source(ctx.conn, job.id, ctx.worker, fmt, stored)
        return fmt
    url: str = job.options["source_url"]
    began = time.monotonic()
    tags = {"job_id": job.id, "source": source_url.shown(url)}
    log.info("fetching the source URL", extra=tags)
    writer: Any = None

    def start(answer: Answer) -> Callable[[bytes], object]:
        nonlocal fmt, writer
        if fmt == source_url.PENDING_FORMAT:
            fmt = (
                source_url.format_from_url(answer.url, None)
                or source_url.format_from_content_type(answer.content_type)
                or ""
            )
            if not fmt:
                raise FetchError(source_url.missing_format(answer.url, answer.content_type))
        jobs.set_source(ctx.conn, job.id, ctx.worker, fmt, answer.length)
        writer = ctx.storage.writer(job.source_key)
        return writer.write  # type: ignore[no-any-return]

    try:
        _, size = fetch(
            url,
            source_url.policy(ctx.settings),
            Limits.of(ctx.settings),
            on_progress,
            start,
            resolver,
        )
        if writer is not None:
            writer.close()
    except BaseException:
        # Dropped unclosed, the writer aborts its upload: nothing is stored.
        writer = None
        raise
    jobs.set_source(ctx.conn, job.id, ctx.worker, fmt, size)
    seconds = time.monotonic() - began
    log.info(
        "source URL fetched",
        extra={**tags, "bytes": size, "format": fmt, "seconds": round(seconds, 3)},
    )
    return fmt


__all__ = ["MAX_REDIRECTS", "Answer", "FetchError", "Limits", "ensure_source", "fetch"]
