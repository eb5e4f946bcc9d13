"""Shared pytest configuration. Keep it small: put helpers in their own modules and import them."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/ on sys.path whatever pytest's import mode (or a later tests/__init__.py) does, so test
# modules can `from servers import PostgresServer` too.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# Throwaway PostgreSQL / Redis / S3 servers (see tests/servers.py).
from servers import fresh_database, pg_server, redis_server, s3_server  # noqa: E402

__all__ = ["fresh_database", "pg_server", "redis_server", "s3_server"]
