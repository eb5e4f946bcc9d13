"""Imports from a URL (``source_url``): what the API and the worker both need to know.

The API checks a source URL when the job is asked for (:func:`check`: form, then every address
its host resolves to, through the SSRF guard :mod:`engine.netguard`); the worker checks it again
when it fetches (``engine.imports.fetch``), since DNS answers change. Both take the policy from
the settings (:func:`policy`) and tell the format the same way: the request's ``format``, else
the URL path's extension, else the answer's ``Content-Type`` — which only the worker sees, so a
job whose format waits for it is created with the format :data:`PENDING_FORMAT`.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from engine import netguard
from engine.errors import UnsupportedFormat
from engine.formats import FORMATS, detect_format
from engine.settings import Settings

#: A job's format until the worker has read the answer's Content-Type.
PENDING_FORMAT = "auto"
#: Longest source URL accepted (presigned URLs with session tokens run to a few kilobytes).
MAX_URL_CHARS = 8192
#: Content-Types that name a format (parameters such as ``charset`` are ignored).
CONTENT_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/comma-separated-values": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/x-jsonlines": "ndjson",
    "application/jsonlines": "ndjson",
    "application/json": "json",
    "text/json": "json",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}


def policy(settings: Settings) -> netguard.Policy:
    """What the guard lets a source URL reach (BULKIO_URL_IMPORT_ALLOW_PRIVATE)."""
    return netguard.Policy(allow_private=settings.url_import_allow_private)


def shown(url: str) -> str:
    """The URL as messages and logs show it: scheme, host, port and path, never its query (a
    presigned URL's signature) or credentials."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the URL"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


def file_name(url: str) -> str | None:
    """The last segment of the URL's path, decoded: the job's ``file_name`` label."""
    try:
        name = PurePosixPath(unquote(urlsplit(url.strip()).path)).name
    except ValueError:
        return None
    cleaned = "".join(ch for ch in name if ch.isprintable())[:255]
    return cleaned or None


def format_from_url(url: str, declared: str | None) -> str | None:
    """The declared format, else the one the URL path's extension tells (``.gz`` looked
    through), else None. Raises UnsupportedFormat for a declared format that is not one."""
    if declared:
        return detect_format(None, declared)
    try:
        return detect_format(file_name(url), None)
    except UnsupportedFormat:
        return None


def format_from_content_type(content_type: str | None) -> str | None:
    """The format a Content-Type names, or None."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    fmt = CONTENT_TYPES.get(media)
    return fmt if fmt in FORMATS else None


def check(
    url: str, settings: Settings, resolver: netguard.Resolver = netguard.system_resolver
) -> str:
    """The URL, stripped, if the guard accepts it now; raises :class:`netguard.NetGuardError`
    (``Refused`` with its ``reason``, or ``Unresolvable``) with a message fit for the client."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise netguard.Refused("host", f"the URL is longer than {MAX_URL_CHARS} characters")
    netguard.check_url(url, policy(settings), resolver)
    return url


def missing_format(url: str, content_type: str | None) -> str:
    """Why the format of a fetched file cannot be told, and what to do."""
    got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
    extensions = ", ".join(f".{fmt}" for fmt in FORMATS)
    return (
        f"cannot tell the format of {shown(url)}: its path has no known extension "
        f"({extensions}) and the answer has {got}; pass format={'|'.join(FORMATS)}"
    )


__all__ = [
    "CONTENT_TYPES",
    "MAX_URL_CHARS",
    "PENDING_FORMAT",
    "check",
    "file_name",
    "format_from_content_type",
    "format_from_url",
    "missing_format",
    "policy",
    "shown",
]
