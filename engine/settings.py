"""One typed Settings object, built once per entry point from ``BULKIO_*`` environment variables.

Nothing here runs at import time: call :func:`load_settings` (or build ``Settings(...)`` directly in
tests) and pass the object down explicitly. Every field is documented in the README's
"Configuration" table; the environment variable is ``BULKIO_`` + the field name in upper case.

Every field is checked when a ``Settings`` is built (type, then the constraints in its
``Annotated[...]`` type: :class:`Range`, :class:`OneOf`, :class:`Url`, :class:`Text`), so a wrong
value stops the process at start with :class:`SettingsError`, naming the variable and what is
allowed, instead of misbehaving later (``BATCH_ROWS=0`` looped for ever). A new setting gets its
check by adding one annotation: ``batch_rows: Annotated[int, Range(1, 10_000_000)] = 50_000``.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

log = logging.getLogger("bulkio.settings")

#: Default roles accepted for users (``BULKIO_USER_ROLES`` overrides, comma-separated).
DEFAULT_ROLES = ("admin", "author", "editor", "reader", "viewer")

#: ``BULKIO_*`` variables read by scripts and tests, not by :class:`Settings` (Makefile,
#: .ci/services.sh, .ci/setup.sh, tests/servers.py, tests/integration/test_faults.py), and the
#: command-line client's own (engine/client/config.py: its server, token and profile): no warning.
SCRIPT_VARIABLES = frozenset(
    {
        "BULKIO_URL",
        "BULKIO_TOKEN",
        "BULKIO_PROFILE",
        "BULKIO_HOST",
        "BULKIO_PORT",
        "BULKIO_PG_PORT",
        "BULKIO_REDIS_PORT",
        "BULKIO_DATA_DIR",
        "BULKIO_SKIP_APT",
        "BULKIO_PG_BINDIR",
        "BULKIO_FAULT_SEED",
        "BULKIO_TEST_KEEP_SERVER_DIRS",
        "BULKIO_TEST_WRITE_DOCS",
    }
)


class SettingsError(ValueError):
    """Raised when a setting has a wrong type or value; one line per wrong variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def report(self) -> str:
        """What a process that cannot start because of its settings prints (no traceback)."""
        lines = "".join(f"\n  {p}" for p in self.problems)
        return f"bulkio: invalid configuration, not starting:{lines}"


# ---------------------------------------------------------------- constraints (declarative)


@dataclass(frozen=True, slots=True)
class Range:
    """An integer from ``lo`` to ``hi``, both included (None: no bound)."""

    lo: int | None = None
    hi: int | None = None

    def allowed(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"an integer from {self.lo} to {self.hi}"
        if self.lo is not None:
            return f"an integer of at least {self.lo}"
        if self.hi is not None:
            return f"an integer of at most {self.hi}"
        return "an integer"

    def problem(self, value: Any) -> str | None:
        low = self.lo is not None and value < self.lo
        high = self.hi is not None and value > self.hi
        return f"must be {self.allowed()}" if low or high else None


@dataclass(frozen=True, slots=True)
class OneOf:
    """One of ``choices`` (compared ignoring case when ``ignore_case``)."""

    choices: tuple[str, ...]
    ignore_case: bool = False

    def allowed(self) -> str:
        return "one of " + ", ".join(self.choices)

    def problem(self, value: Any) -> str | None:
        if self.ignore_case:
            ok = value.upper() in {c.upper() for c in self.choices}
        else:
            ok = value in self.choices
        return None if ok else f"must be {self.allowed()}"


@dataclass(frozen=True, slots=True)
class Url:
    """A URL with one of ``schemes`` (``optional``: or empty). ``host``: a host is required;
    ``base``: it is a prefix for paths, so it must not end with ``/``. The value itself is never
    echoed (URLs may hold passwords): only its scheme."""

    schemes: tuple[str, ...]
    optional: bool = False
    host: bool = False
    base: bool = False

    def allowed(self) -> str:
        names = [f"{s}://" for s in self.schemes]
        text = "a URL starting with " + (
            f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        )
        return text + (" (or empty)" if self.optional else "")

    def problem(self, value: Any) -> str | None:
        if not value:
            return None if self.optional else f"must be {self.allowed()}"
        parts = urlsplit(value)
        if "://" not in value or parts.scheme.lower() not in self.schemes:
            got = f"{parts.scheme}://" if "://" in value else "no scheme"
            return f"must be {self.allowed()} (got {got})"
        if self.host and not parts.hostname:
            return f"must name a host ({parts.scheme}://HOST…)"
        if self.base and value.endswith("/"):
            return "must not end with / (paths are appended to it)"
        return None


@dataclass(frozen=True, slots=True)
class StorageUrl(Url):
    """A :class:`Url` of an object store: ``file://`` needs an absolute directory, ``s3://`` a
    bucket."""

    def problem(self, value: Any) -> str | None:
        problem = Url.problem(self, value)  # no super(): slots dataclasses break its cell
        if problem or not value:
            return problem
        parts = urlsplit(value)
        if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
            return "must be file:///ABSOLUTE/DIR (three slashes; got a relative path or a host)"
        if parts.scheme == "s3" and not parts.netloc:
            return "must name a bucket (s3://BUCKET/prefix)"
        return None


@dataclass(frozen=True, slots=True)
class Text:
    """A string (or each string of a tuple, which must not be empty) of at most ``max_len``
    characters, none of them blank unless ``blanks``; ``optional``: or empty."""

    max_len: int = 200
    optional: bool = False
    blanks: bool = False

    def allowed(self) -> str:
        blanks = "" if self.blanks else " without blanks"
        return f"a non-empty text of at most {self.max_len} characters{blanks}"

    def problem(self, value: Any) -> str | None:
        items = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple) and not value:
            return "must list at least one value"
        for item in items:
            if not item and self.optional:
                continue
            blank = not self.blanks and any(c.isspace() for c in item)
            if not item or len(item) > self.max_len or blank:
                return f"must be {self.allowed()}"
        return None


@dataclass(frozen=True, slots=True)
class Seconds:
    """A comma-separated list of 1 to ``max_items`` whole numbers of seconds, each at most
    ``max_value``."""

    max_items: int = 20
    max_value: int = 7 * 86_400

    def allowed(self) -> str:
        return (
            f"a comma-separated list of 1 to {self.max_items} whole numbers of seconds "
            f"from 0 to {self.max_value}"
        )

    def problem(self, value: Any) -> str | None:
        ok = 0 < len(value) <= self.max_items and all(
            v.isascii() and v.isdigit() and int(v) <= self.max_value for v in value
        )
        return None if ok else f"must be {self.allowed()}"


#: Marks a field whose value must never be echoed in a message (credentials).
SECRET = "secret"

_HTTP = ("http", "https")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# ---------------------------------------------------------------- the settings


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: Annotated[str, Url(("postgresql", "postgres"))] = (
        "postgresql://bulkio:bulkio@127.0.0.1:54329/bulkio"
    )
    redis_url: Annotated[str, Url(("redis", "rediss", "unix"))] = "redis://127.0.0.1:63799/0"
    #: ``file:///abs/dir`` (default: ./.data/objects), ``s3://bucket/prefix`` or ``memory://``.
    storage_url: Annotated[str, StorageUrl(("file", "s3", "memory"), optional=True)] = ""
    s3_endpoint: Annotated[str, Url(_HTTP, optional=True, host=True)] = ""
    s3_region: Annotated[str, Text(64)] = "us-east-1"
    s3_access_key_id: Annotated[str, Text(256, optional=True)] = ""
    s3_secret_access_key: Annotated[str, SECRET] = field(default="", repr=False)
    #: Public base URL of the API, used to build links (error reports, local downloads).
    public_url: Annotated[str, Url(_HTTP, host=True, base=True)] = "http://127.0.0.1:8000"
    #: Records per Arrow batch (one transaction each). Chosen by measurement, see README.
    batch_rows: Annotated[int, Range(1, 10_000_000)] = 50_000
    #: ...or fewer, when their decoded bytes pass this: wide records (400-character article
    #: bodies) keep a worker's memory bounded.
    batch_bytes: Annotated[int, Range(1024, 1024**3)] = 8 * 1024 * 1024
    #: Cap on decompressed bytes of one uploaded file (gzip bombs fail the job cleanly).
    max_decompressed_bytes: Annotated[int, Range(1)] = 20 * 1024**3
    #: Cap on the uploaded (compressed) body; larger uploads get 413.
    max_upload_bytes: Annotated[int, Range(1)] = 5 * 1024**3
    #: Upload sessions (``POST /v1/uploads``) not imported this many hours after their creation
    #: are removed by the retention run (S3: the multipart upload aborted; local: the file).
    upload_expiry_hours: Annotated[int, Range(1, 30 * 24)] = 24
    #: Expiry of an upload session's presigned part URLs (S3) and signed data URL (local store);
    #: ``GET /v1/uploads/{id}`` hands out fresh ones.
    upload_url_ttl_seconds: Annotated[int, Range(60, 7 * 86_400)] = 3600
    #: Part size of S3 upload sessions (S3: at least 5 MiB); larger for files that would need
    #: more than 10,000 parts.
    upload_part_bytes: Annotated[int, Range(5 * 1024**2, 5 * 1024**3)] = 8 * 1024**2
    #: Upload sessions one owner may hold at once, not yet imported or expired.
    max_open_uploads: Annotated[int, Range(1, 100_000)] = 100
    #: Cap on one record's bytes (a CSV with an unbalanced quote fails instead of eating memory).
    max_record_bytes: Annotated[int, Range(64, 1024**3)] = 1024 * 1024
    user_roles: Annotated[tuple[str, ...], Text(64)] = DEFAULT_ROLES
    #: How long a worker owns a running job without checkpointing before others may take it.
    #: At least 2: the server ends a worker's idle transactions after half of it (at least 1 s).
    lease_seconds: Annotated[int, Range(2, 86_400)] = 60
    #: How often each worker's reconciler looks for lost or abandoned jobs.
    reconcile_seconds: Annotated[int, Range(1, 3600)] = 10
    #: A queued job whose message has not been picked up for this long is re-enqueued.
    requeue_after_seconds: Annotated[int, Range(1, 86_400)] = 30
    #: Attempts (claims) of one job before it is failed for good.
    max_attempts: Annotated[int, Range(1, 100)] = 3
    #: Days a finished job is kept with its uploaded file, error report and export result; then
    #: workers delete them (hourly check; ``bulkio cleanup`` runs it at once). 0 keeps them.
    retention_days: Annotated[int, Range(0, 36_500)] = 7
    #: Number of errors shown inline in a job's status.
    inline_errors: Annotated[int, Range(0, 1000)] = 20
    #: Error rows stored per import job. Beyond it errors are still counted (``failed``,
    #: ``error_count``) but not stored; the job view and the error report say it is truncated.
    max_error_rows: Annotated[int, Range(0, 1_000_000_000)] = 100_000
    queue_name: Annotated[str, Text(100)] = "bulkio"
    #: Expiry of presigned / signed download URLs (S3 presigns at most 7 days).
    download_url_ttl_seconds: Annotated[int, Range(1, 7 * 86_400)] = 900
    #: Expiry of the signed ``events_url`` in job views (checked when a client connects; an
    #: open stream is not cut when it passes).
    events_url_ttl_seconds: Annotated[int, Range(1, 7 * 86_400)] = 900
    #: A Server-Sent Events stream of job events sends a ``: keep-alive`` comment this often
    #: while no event comes (proxies and clients see the connection alive).
    events_heartbeat_seconds: Annotated[int, Range(1, 3600)] = 15
    #: Secret for HMAC-signed local download URLs. Empty: one generated once and kept in
    #: PostgreSQL (table ``secrets``), shared by every API process (engine/storage.py).
    signing_secret: Annotated[str, SECRET] = field(default="", repr=False)
    log_level: Annotated[str, OneOf(LOG_LEVELS, ignore_case=True)] = "INFO"
    #: Directory shared by the processes of one machine for Prometheus counters.
    metrics_dir: Annotated[str, Text(4096, blanks=True)] = ".data/metrics"
    #: Requests per minute per API token (a token's own limit wins; 0 disables).
    rate_limit_per_minute: Annotated[int, Range(0, 1_000_000)] = 600
    #: Queued + running jobs per API token, uploads in progress included (a token's own limit
    #: wins).
    max_running_jobs: Annotated[int, Range(1, 100_000)] = 20
    #: Uploads one API token may send at once, across API processes (0: no cap).
    max_concurrent_uploads: Annotated[int, Range(0, 10_000)] = 4
    #: Streaming exports and error reports one API token may have open at once (0: no cap).
    max_concurrent_streams: Annotated[int, Range(0, 10_000)] = 4
    #: A streamed response whose client reads nothing for this long is closed, its database
    #: connection and snapshot released (0: wait for ever).
    stream_stall_seconds: Annotated[int, Range(0, 86_400)] = 60
    #: An upload's or stream's slot outlives a crashed API process this long (renewed every
    #: third of it while its request runs).
    slot_ttl_seconds: Annotated[int, Range(3, 3600)] = 30
    #: ``auto``: clean batches check references set-based (one FOR KEY SHARE lock statement per
    #: reference and batch) instead of by PostgreSQL's per-row FK triggers, where the role may
    #: and the table allows (engine/imports/references.py, whose MODES these are); ``triggers``:
    #: always the FK triggers.
    reference_checks: Annotated[str, OneOf(("auto", "triggers"))] = "auto"
    #: Neutralise spreadsheet formulas in CSV exports and error reports (a cell whose first
    #: non-blank character is ``=``, ``+``, ``-``, ``@``, or that starts with tab or CR).
    csv_formula_guard: bool = True
    #: Webhook URLs may be ``http`` and resolve to loopback, private or shared (CGNAT) addresses:
    #: development and tests only. Link-local, multicast and reserved addresses stay refused.
    webhook_allow_private: bool = False
    #: Seconds a webhook receiver has to answer one attempt (connect, send, answer), in all.
    webhook_timeout_seconds: Annotated[int, Range(1, 120)] = 15
    #: Seconds to wait before each attempt of a webhook delivery, the first one included: the
    #: Standard Webhooks schedule (now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h),
    #: each wait with +-10 % jitter. Its length is the number of attempts.
    webhook_retry_schedule: Annotated[tuple[str, ...], Seconds(max_items=30)] = (
        "0", "5", "300", "1800", "7200", "18000", "36000", "50400", "72000", "86400",
    )  # fmt: skip
    #: After a secret rotation, the previous secret keeps signing (beside the new one) this long.
    webhook_rotation_seconds: Annotated[int, Range(0, 30 * 86_400)] = 86_400
    #: Webhook deliveries one worker process sends at once.
    webhook_concurrency: Annotated[int, Range(1, 64)] = 4
    #: Imports from a URL (``source_url``) may be ``http`` and reach loopback, private or shared
    #: (CGNAT) addresses: development and tests only. Link-local, multicast and reserved
    #: addresses stay refused.
    url_import_allow_private: bool = False
    #: Seconds a source URL has to accept the connection, and to send each next piece of the
    #: answer (a stalled server fails the job).
    url_import_timeout_seconds: Annotated[int, Range(1, 600)] = 30
    #: Seconds the worker may spend fetching one source URL in all, redirects included.
    url_import_deadline_seconds: Annotated[int, Range(1, 7 * 86_400)] = 3600

    def __post_init__(self) -> None:
        problems = [p for f in fields(self) if (p := _check(f.name, getattr(self, f.name)))]
        problems += _cross_checks(self)
        if problems:
            raise SettingsError(problems)

    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return "file://" + os.path.abspath(".data/objects")


# ---------------------------------------------------------------- checking


def env_name(field_name: str) -> str:
    return "BULKIO_" + field_name.upper()


def _spec(name: str) -> tuple[Any, list[Any]]:
    """(base type, constraints) of a field, from its ``Annotated`` type."""
    hint = _hints()[name]
    if get_origin(hint) is Annotated:
        base, *extras = get_args(hint)
        return base, list(extras)
    return hint, []


_HINTS: dict[str, Any] = {}


def _hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(get_type_hints(Settings, include_extras=True))
    return _HINTS


def _kind_text(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind == tuple[str, ...]:
        return "a comma-separated list"
    return "a text"


def _allowed(name: str) -> str:
    kind, extras = _spec(name)
    texts = [c.allowed() for c in extras if hasattr(c, "allowed")]
    return texts[0] if texts else _kind_text(kind)


def _shown(name: str, value: Any) -> str:
    """``BULKIO_X=value`` for messages; never the value of a secret or a URL."""
    extras = _spec(name)[1]
    if SECRET in extras or any(isinstance(c, Url) for c in extras):
        return env_name(name)
    if isinstance(value, tuple):
        value = ",".join(value)
    return f"{env_name(name)}={value!r}" if isinstance(value, str) else f"{env_name(name)}={value}"


def _type_ok(kind: Any, value: Any) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == tuple[str, ...]:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    return isinstance(value, kind)


def _check(name: str, value: Any) -> str | None:
    kind, extras = _spec(name)
    if not _type_ok(kind, value):
        return f"{_shown(name, value)}: must be {_allowed(name)}"
    for constraint in extras:
        problem = constraint.problem(value) if hasattr(constraint, "problem") else None
        if problem:
            return f"{_shown(name, value)}: {problem}"
    return None


def _cross_checks(s: Settings) -> list[str]:
    problems = []
    if bool(s.s3_access_key_id) != bool(s.s3_secret_access_key):
        problems.append(
            "BULKIO_S3_ACCESS_KEY_ID and BULKIO_S3_SECRET_ACCESS_KEY: set both or neither"
        )
    return problems


def _convert(raw: str, kind: Any) -> Any:
    if kind is bool:
        value = raw.strip().lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        raise ValueError(raw)
    if kind is int:
        return int(raw.strip().replace("_", ""))
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from ``BULKIO_*`` variables; ``overrides`` win (used by tests).

    Raises :class:`SettingsError` listing every wrong variable with what it allows."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in fields(Settings):
        raw = env.get(env_name(f.name))
        if raw is None or raw == "" or f.name in overrides:
            continue
        try:
            values[f.name] = _convert(raw, _spec(f.name)[0])
        except ValueError:
            problems.append(f"{_shown(f.name, raw)}: must be {_allowed(f.name)}")
    values.update(overrides)
    try:
        settings = Settings(**values)
    except SettingsError as exc:
        problems += exc.problems
    if problems:
        raise SettingsError(problems)
    return settings


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``BULKIO_*`` names in the environment that no setting and no script reads (typos)."""
    env = os.environ if environ is None else environ
    known = {env_name(f.name) for f in fields(Settings)} | SCRIPT_VARIABLES
    return sorted(n for n in env if n.startswith("BULKIO_") and n not in known)


_warned: set[str] = set()


def warn_unknown(environ: Mapping[str, str] | None = None) -> None:
    """Log one warning per unknown ``BULKIO_*`` name per process (call after logging is set up):
    a misspelt setting is otherwise silently ignored."""
    known = sorted(env_name(f.name) for f in fields(Settings))
    for name in unknown_variables(environ):
        if name in _warned:
            continue
        _warned.add(name)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        log.warning(f"unknown setting {name} is ignored{hint}", extra={"variable": name})
