"""The web page: ``/ui`` (``/`` redirects there) and its few static files from ``api/static/``.

The page is a client of the public API like any other (it holds the user's token in
sessionStorage and calls ``/v1`` with ``Authorization: Bearer``); nothing here reads a job.
The server only fills in what the page's forms offer (resources, their fields and filters,
formats, modes) from the catalog, so the forms follow the settings (``BULKIO_USER_ROLES``).

Every answer carries a Content-Security-Policy that lets the page load and connect to its own
origin only: no inline script, no other host, no framing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from litestar import Response, get
from litestar.response import Redirect

from api.problems import Problem
from api.state import AppState
from engine.exports.query import FORMATS as EXPORT_FORMATS
from engine.formats import FORMATS as IMPORT_FORMATS
from engine.resources import IMPORT_MODES, Filter, FilterOp, Kind, Resource

#: The static files the page is made of, with their media types (Litestar adds the charset of
#: text types): nothing else is served.
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
#: Where the page's data is put in index.html.
PLACEHOLDER = "<!-- bulkio:catalog -->"
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files: always revalidated, so a new version shows at the next load.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return files("api").joinpath("static", name).read_bytes()


def filter_hint(resource: Resource, flt: Filter) -> str:
    """What a filter's value looks like, for the export form."""
    column = resource.column(flt.column)
    if flt.op is FilterOp.IN:
        return "ids, comma-separated"
    if flt.op is FilterOp.DOMAIN:
        return "a domain, e.g. example.com"
    if flt.op is FilterOp.CONTAINS:
        return "one tag"
    if column.kind is Kind.TIMESTAMP:
        return "a time, e.g. 2024-01-31T00:00:00Z"
    if column.kind is Kind.BOOL:
        return "true or false"
    if column.choices:
        return "one of " + ", ".join(column.choices)
    if column.kind in (Kind.UUID, Kind.COMMENT_ID):
        return "an id"
    return ""


def catalog_json(catalog: Mapping[str, Resource]) -> str:
    """What the forms offer, as JSON that is safe inside a ``<script>`` element."""
    data: dict[str, Any] = {
        "resources": {
            name: {
                "fields": list(resource.column_names),
                "filters": [
                    {"name": f.name, "hint": filter_hint(resource, f)} for f in resource.filters
                ],
            }
            for name, resource in catalog.items()
        },
        "import_formats": list(IMPORT_FORMATS),
        "modes": list(IMPORT_MODES),
        "export_formats": list(EXPORT_FORMATS),
    }
    text = json.dumps(data, separators=(",", ":"))
    # No "</script>" (nor "<!--") can end or confuse the element early.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@get("/", include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    return Redirect("/ui", status_code=302)


@get("/ui", include_in_schema=False, sync_to_thread=True)
def page(app: AppState) -> Response[bytes]:
    html = _read("index.html").decode()
    script = f'<script type="application/json" id="catalog">{catalog_json(app.catalog)}</script>'
    body = html.replace(PLACEHOLDER, script, 1).encode()
    return Response(body, media_type="text/html", headers=HEADERS)


@get("/ui/{name:str}", include_in_schema=False, sync_to_thread=True)
def asset(name: str) -> Response[bytes]:
    media = ASSETS.get(name)
    if media is None:
        raise Problem(404, f"the web page has no file {name!r}")
    return Response(_read(name), media_type=media, headers=HEADERS)


ROUTES = [root, page, asset]
