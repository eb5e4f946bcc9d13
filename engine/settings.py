"""One typed Settings object, built once per entry point from ``BULKIO_*`` environment variables.

Nothing here runs at import time: call :func:`load_settings` (or build ``Settings(...)`` directly in
tests) and pass the object down explicitly. Every field is documented in the README's
"Configuration" table; the environment variable is ``BULKIO_`` + the field name in upper case.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

#: Values of ``reference_checks`` (engine.imports.references.MODES; settings import nothing
#: of ours).
_REFERENCE_CHECKS = ("auto", "triggers")

#: Default roles accepted for users (``BULKIO_USER_ROLES`` overrides, comma-separated).
DEFAULT_ROLES = ("admin", "author", "editor", "reader", "viewer")


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "postgresql://bulkio:bulkio@127.0.0.1:54329/bulkio"
    redis_url: str = "redis://127.0.0.1:63799/0"
    #: ``file:///abs/dir`` (default: ./.data/objects), ``s3://bucket/prefix`` or ``memory://``.
    storage_url: str = ""
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    #: Public base URL of the API, used to build links (error reports, local downloads).
    public_url: str = "http://127.0.0.1:8000"
    #: Records per Arrow batch (one transaction each). Chosen by measurement, see README.
    batch_rows: int = 50_000
    #: ...or fewer, when their decoded bytes pass this: wide records (400-character article
    #: bodies) keep a worker's memory bounded.
    batch_bytes: int = 8 * 1024 * 1024
    #: Cap on decompressed bytes of one uploaded file (gzip bombs fail the job cleanly).
    max_decompressed_bytes: int = 20 * 1024**3
    #: Cap on the uploaded (compressed) body; larger uploads get 413.
    max_upload_bytes: int = 5 * 1024**3
    #: Cap on one record's bytes (a CSV with an unbalanced quote fails instead of eating memory).
    max_record_bytes: int = 1024 * 1024
    user_roles: tuple[str, ...] = DEFAULT_ROLES
    #: How long a worker owns a running job without checkpointing before others may take it.
    lease_seconds: int = 60
    #: How often each worker's reconciler looks for lost or abandoned jobs.
    reconcile_seconds: int = 10
    #: A queued job whose message has not been picked up for this long is re-enqueued.
    requeue_after_seconds: int = 30
    #: Attempts (claims) of one job before it is failed for good.
    max_attempts: int = 3
    #: Days a finished job is kept with its uploaded file, error report and export result; then
    #: workers delete them (hourly check; ``bulkio cleanup`` runs it at once). 0 keeps them.
    retention_days: int = 7
    #: Number of errors shown inline in a job's status.
    inline_errors: int = 20
    queue_name: str = "bulkio"
    #: Expiry of presigned / signed download URLs.
    download_url_ttl_seconds: int = 900
    #: Secret for HMAC-signed local download URLs (generated per process when empty: set it
    #: when several API processes serve the same store).
    signing_secret: str = ""
    log_level: str = "INFO"
    #: Directory shared by the processes of one machine for Prometheus counters.
    metrics_dir: str = ".data/metrics"
    #: Requests per minute per API token (a token's own limit wins; 0 disables).
    rate_limit_per_minute: int = 600
    #: Queued + running jobs per API token (a token's own limit wins).
    max_running_jobs: int = 20
    #: ``auto``: clean batches check references set-based (one FOR KEY SHARE lock statement per
    #: reference and batch) instead of by PostgreSQL's per-row FK triggers, where the role may
    #: and the table allows (engine/references.py); ``triggers``: always the FK triggers.
    reference_checks: str = "auto"
    #: Neutralise spreadsheet formulas in CSV exports (``=``, ``+``, ``-``, ``@``, tab, CR).
    csv_formula_guard: bool = True

    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return "file://" + os.path.abspath(".data/objects")


def _convert(raw: str, kind: Any) -> Any:
    if kind is bool:
        value = raw.strip().lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if kind is int:
        return int(raw.replace("_", ""))
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from ``BULKIO_*`` variables; ``overrides`` win (used by tests)."""
    env = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get("BULKIO_" + f.name.upper())
        if raw is not None and raw != "":
            try:
                values[f.name] = _convert(raw, hints[f.name])
            except ValueError as exc:
                raise ValueError(f"BULKIO_{f.name.upper()}: {exc}") from exc
    values.update(overrides)
    checks = values.get("reference_checks", "auto")
    if checks not in _REFERENCE_CHECKS:
        raise ValueError(
            f"BULKIO_REFERENCE_CHECKS: expected one of {', '.join(_REFERENCE_CHECKS)}, "
            f"got {checks!r}"
        )
    return Settings(**values)
