"""The readers (``engine.formats.reader.read_batches``) over bytes in memory, for the reader
tests: a file cut into chunks of any size, the rows and error rows it gave, the numbering
invariants every reading must keep, and the hostile samples and bytes the fuzzers mutate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from engine.formats.reader import Batch, Header, Position, read_batches
from engine.imports.validate import validate
from engine.resources import catalog

__all__ = [
    "CELL",
    "COLS",
    "FUZZ",
    "HOSTILE_BYTES",
    "SAMPLES",
    "USERS",
    "check_numbering",
    "mutate",
    "outcome",
    "read",
    "read_users",
]

#: The columns of :func:`read`'s default resource ("id" required in CSV).
COLS = ("id", "name", "x")
USERS = catalog()["users"]
#: Bounded fuzzing: no deadline (a slow CI box), no example database (runs are independent).
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def read(
    data: bytes,
    fmt: str,
    *,
    columns: Sequence[str] = COLS,
    required: Sequence[str] = ("id",),
    batch_rows: int = 1000,
    chunk: int = 7,
    start: Position | None = None,
    record_cap: int = 4096,
    headers: list[Header] | None = None,
) -> list[Batch]:
    """Every batch of ``data`` handed to the reader in ``chunk``-byte pieces."""
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    return list(
        read_batches(
            chunks,
            fmt,
            columns,
            list(required) if fmt == "csv" else [],
            batch_rows=batch_rows,
            max_record_bytes=record_cap,
            max_decompressed_bytes=10**8,
            start=start,
            header_out=headers,
        )
    )


def outcome(batches: list[Batch]) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """(rows, (row, line, code, message) of each error row) of a reading."""
    rows = [r for b in batches for r in b.frame.to_dicts()]
    errors = [
        (e["row"], e["line"], e["code"], e["message"]) for b in batches for e in b.errors.to_dicts()
    ]
    return rows, errors


def check_numbering(batches: list[Batch], data: bytes) -> None:
    """Every record gets exactly one row number (a row or an error row); numbers are 1..n in
    file order, lines never go backwards, and each batch knows where the next one starts."""
    numbered: list[tuple[int, int]] = []
    row = 1
    for k, b in enumerate(batches):
        assert b.index == k
        mine = sorted(
            [(r, ln) for r, ln in zip(b.frame["__row"], b.frame["__line"], strict=True)]
            + [(r, ln) for r, ln in zip(b.errors["row"], b.errors["line"], strict=True)]
        )
        assert [r for r, _ in mine] == list(range(row, row + b.rows)), (k, mine)
        row += b.rows
        assert b.after.row == row and b.after.batch == k + 1
        numbered += mine
    lines = [ln for _, ln in numbered]
    assert lines == sorted(lines)
    assert all(1 <= ln <= data.count(b"\n") + 1 for ln in lines)


def read_users(data: bytes, fmt: str = "csv", cap: int = 4096) -> list[tuple[Any, ...]]:
    """(row, line, field, code, message) of every error row of a users file, reader and
    validator together; fails if a NUL reached a valid row."""
    out: list[tuple[Any, ...]] = []
    batches = read(
        data, fmt, columns=USERS.column_names, required=USERS.required_columns, record_cap=cap
    )
    for b in batches:
        checked = validate(b.frame, USERS)
        errors = pl.concat([b.errors, checked.errors]).sort("row", "field", nulls_last=True)
        out += errors.select("row", "line", "field", "code", "message").rows()
        assert (
            not checked.valid.select(
                pl.any_horizontal(pl.col(pl.String).str.contains("\x00", literal=True))
            )
            .to_series()
            .any()
        ), "a NUL reached a valid row: PostgreSQL text cannot store it"
    return out


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``data`` with each (position, bytes to drop, bytes to insert) applied in turn."""
    out = bytearray(data)
    for pos, drop, insert in edits:
        at = pos % (len(out) + 1)
        out[at : at + drop] = insert
    return bytes(out)


#: A small file per format with quoting, blank lines, ragged records and non-objects to mutate.
SAMPLES = {
    "csv": b'id,name,x\n1,"a\r\nb",q\r\n\r\n2,"say ""hi""",\n3,,z,extra\n4,w,"m\nl"\n5,e,f',
    "ndjson": b'{"id":"1"}\n\n{"id":2,"name":["a"]}\n{"id":\n[1]\n"s"\n{"id":"7","x":{"a":1}}\n',
    "json": b' [\n {"id":"1","name":"a,\\"]b\\\\"},\n {"id":"2",\n "name":"x"}, 7,\n'
    b' {"id":"3","x":[1,{"a":"}"}]}\n]\n',
}
#: Bytes that mean something to one of the readers.
HOSTILE_BYTES = st.sampled_from(
    [b'"', b",", b"\n", b"\r", b"\r\n", b"\x00", b"{", b"}", b"[", b"]", b"\\", b"\xff", b" "]
)
#: A cell's text: any UTF-8 plus separators, quotes, line ends and NUL.
CELL = st.lists(
    st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from([",", '"', "\n", "\r", "\r\n", "\x00", " ", "\t", "é", '""']),
    max_size=8,
).map("".join)
