"""The ``bulkio`` command-line client: imports, exports and jobs over the public HTTP API only.

It never reads the database and imports nothing of the server (no psycopg, ADBC, polars or
pipeline module; tests/unit/test_client_imports.py checks): what it does, a remote user can do.

Modules: ``config`` (server and token: flags, environment, profiles), ``service`` (the API over
httpx), ``sse`` (Server-Sent Events), ``follow`` (a job to its end: events, else polling),
``display`` (rich progress and tables on stderr, JSON on stdout), ``commands`` (click),
``errors`` (exit codes).
"""

from __future__ import annotations

from engine.client.errors import Exit
from engine.client.main import main

__all__ = ["Exit", "main"]
