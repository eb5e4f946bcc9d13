"""Shared pytest configuration. Keep it small: put helpers in tests/support/ and import them."""

from __future__ import annotations

import sys
from pathlib import Path

# TEMPORARY: removed once every test imports tests.support. Test modules still written as
# `from servers import …` / `from harness import …` find the compatibility modules of tests/
# and tests/integration/ through these two entries.
for _old in ("integration", ""):
    _path = str(Path(__file__).resolve().parent / _old)
    if _path not in sys.path:
        sys.path.insert(0, _path)

# Throwaway PostgreSQL / Redis / S3 servers (tests/support/servers.py) and the test database
# (tests/support/database.py: `database_url`, which a module or folder may override, and `db`).
from tests.support.database import database_url, db  # noqa: E402
from tests.support.servers import fresh_database, pg_server, redis_server, s3_server  # noqa: E402

__all__ = ["database_url", "db", "fresh_database", "pg_server", "redis_server", "s3_server"]
