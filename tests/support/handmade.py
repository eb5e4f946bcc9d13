"""A few users records written by hand, byte for byte, for tests that send exact (often hostile)
bytes: a CSV header and records, JSON objects, and the id every record needs unless it updates
an existing row."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["GOOD", "HEADER", "csv_row", "json_object", "user_id"]

#: The users CSV header, in the catalog's column order.
HEADER = b"id,email,name,role,created_at\n"


def user_id(n: int) -> str:
    """A valid UUID made from ``n``."""
    return f"00000000-0000-4000-8000-{n:012d}"


def csv_row(n: int, email: str, name: bytes = b"Ann") -> bytes:
    """A valid users CSV record (no line end)."""
    return b"%s,%s,%s,admin,2024-01-01T00:00:00Z" % (user_id(n).encode(), email.encode(), name)


def json_object(n: int, email: str, name: str = "A", extra: dict[str, Any] | None = None) -> str:
    """A users JSON object as text (``extra`` adds keys, e.g. unknown ones)."""
    fields = {"id": user_id(n), "email": email, "name": name, "role": "admin"}
    fields = {**fields, "created_at": "2024-01-01", **(extra or {})}
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


#: One valid users CSV record.
GOOD = csv_row(1, "ann@example.com")
