"""Shared pytest configuration. Keep it small: put helpers in tests/support/ and import them."""

from __future__ import annotations

# Throwaway PostgreSQL / Redis / S3 servers (tests/support/servers.py) and the test database
# (tests/support/database.py: `database_url`, which a module or folder may override, and `db`).
from tests.support.database import database_url, db
from tests.support.servers import fresh_database, pg_server, redis_server, s3_server

__all__ = ["database_url", "db", "fresh_database", "pg_server", "redis_server", "s3_server"]
