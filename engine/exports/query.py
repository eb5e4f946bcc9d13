"""Exports: a request (resource, fields, filters) → one query → Arrow batches → encoded bytes.

Both the streaming HTTP export and the export job go through :func:`prepare` (validate the
request against the resource declaration, build the query), :func:`export_batches` (ADBC, one
snapshot) and :class:`Encoded` (writer + optional gzip or zstd, ``engine.exports.compress``).

Filter values are never SQL text. They are *not* bound as ordinary query parameters either: the
ADBC PostgreSQL driver streams a parameter-free query through ``COPY (…) TO STDOUT`` in bounded
batches, but materialises a query with bind parameters as one result (measured: 1M users came
back as a single 1M-row batch, 464 MB RSS vs 171 MB). So the values are bound by a first
statement, ``SELECT set_config('bulkio.export_p1', $1, true), …`` (transaction-local settings),
and the query reads them back with ``current_setting('bulkio.export_p1')::<type>``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from engine.errors import BulkioError
from engine.exports.compress import COMPRESSIONS, SUFFIXES, Compressor, compressor
from engine.exports.writers import WRITERS, Writer, writer_for
from engine.resources import Filter, FilterOp, Kind, Resource

#: Formats an export can be written in.
FORMATS = WRITERS
#: Arrow bytes per batch the ADBC driver aims at (its default is 16 MiB). Peak RSS of the API
#: worker streaming 1M users as NDJSON: 16 MiB → 550-620 MB and rising with each export,
#: 4 MiB → 310 MB, 1 MiB → 215-230 MB (100K rows: 210-220 MB), and no slower. ~7,500 users a batch.
BATCH_BYTES = 1024 * 1024
_BATCH_HINT = "adbc.postgresql.batch_size_hint_bytes"
#: Spellings of a boolean filter value (``active=yes``).
TRUE_VALUES, FALSE_VALUES = ("true", "1", "yes"), ("false", "0", "no")


class ExportRequestError(BulkioError):
    """Raised when an export names an unknown resource, format, field, filter or compression, or
    a filter value cannot be used; the message names the allowed values."""


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """SQL built only from the resource declaration, plus the text values it reads back."""

    columns: tuple[str, ...]
    sql: str
    params: tuple[str, ...]

    @property
    def bind_sql(self) -> str:
        sets = ", ".join(
            f"set_config('{_setting(i)}', ${i}, true)" for i in range(1, len(self.params) + 1)
        )
        return f"SELECT {sets}"


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """A validated export request with defaults resolved (stored as an export job's options)."""

    resource: str
    format: str
    fields: tuple[str, ...]
    filters: Mapping[str, str]
    compression: str | None
    formula_guard: bool

    def options(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "format": self.format,
            "fields": list(self.fields),
            "filters": dict(sorted(self.filters.items())),
            "compression": self.compression,
            "formula_guard": self.formula_guard,
        }

    @property
    def file_name(self) -> str:
        return f"{self.resource}.{self.format}" + SUFFIXES.get(self.compression or "", "")

    def writer(self) -> Writer:
        return writer_for(self.format, list(self.fields), formula_guard=self.formula_guard)


def _setting(i: int) -> str:
    return f"bulkio.export_p{i}"


def _choose(kind: str, value: str | None, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ExportRequestError(f"{kind} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _uuid(name: str, value: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ExportRequestError(f"filter {name!r}: {value!r} is not a UUID") from None


def _timestamp(name: str, value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ExportRequestError(
            f"filter {name!r}: {value!r} is not an ISO-8601 timestamp such as 2024-03-01T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()


def _as_list(name: str, raw: Any) -> list[str]:
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError:
                raise ExportRequestError(f"filter {name!r}: not a JSON array") from None
        else:
            raw = text.split(",")
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ExportRequestError(f"filter {name!r}: give a list of strings (JSON array or a,b,c)")
    values = [v.strip() for v in raw if v.strip()]
    if not values:
        raise ExportRequestError(f"filter {name!r}: the list is empty")
    return values


def _scalar(name: str, raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    if not isinstance(raw, str) or not raw.strip():
        raise ExportRequestError(f"filter {name!r}: give one non-empty value")
    return raw.strip()


def _normalise(resource: Resource, flt: Filter, raw: Any) -> str:
    """The filter value as the text the query casts back to the column's type."""
    col = resource.column(flt.column)
    if flt.op is FilterOp.IN:
        values = _as_list(flt.name, raw)
        if col.kind is Kind.UUID:
            values = [_uuid(flt.name, v) for v in values]
        return json.dumps(values)
    value = _scalar(flt.name, raw)
    if col.kind is Kind.UUID:
        return _uuid(flt.name, value)
    if col.kind is Kind.TIMESTAMP:
        return _timestamp(flt.name, value)
    if col.kind is Kind.BOOL:
        if value.lower() not in TRUE_VALUES + FALSE_VALUES:
            raise ExportRequestError(f"filter {flt.name!r} must be true or false; got {value!r}")
        return "true" if value.lower() in TRUE_VALUES else "false"
    if col.kind is Kind.ENUM:
        return _choose(f"filter {flt.name!r}", value.lower(), col.choices)
    if flt.op is FilterOp.DOMAIN:
        return value.removeprefix("@").lower()
    return value


def _condition(resource: Resource, flt: Filter, i: int) -> str:
    col = resource.column(flt.column)
    name, value = f"t.{col.name}", f"current_setting('{_setting(i)}')"
    match flt.op:
        case FilterOp.EQ:
            return f"{name} = {value}::{col.pg_type}"
        case FilterOp.IN:
            elements = f"ARRAY(SELECT jsonb_array_elements_text({value}::jsonb))"
            return f"{name} = ANY({elements}::{col.pg_type}[])"
        case FilterOp.GTE:
            return f"{name} >= {value}::{col.pg_type}"
        case FilterOp.LT:
            return f"{name} < {value}::{col.pg_type}"
        case FilterOp.CONTAINS:
            return f"{value} = ANY({name})"
        case FilterOp.DOMAIN:
            return f"right(lower({name}), length({value}) + 1) = '@' || {value}"
    raise AssertionError(flt.op)


def build_query(
    resource: Resource, fields: Sequence[str], filters: Mapping[str, str]
) -> ExportQuery:
    """The export query of already-normalised ``filters`` (see :func:`prepare`)."""
    by_name = {f.name: f for f in resource.filters}
    select = ", ".join(
        f"t.{n}::text AS {n}" if resource.column(n).kind is Kind.UUID else f"t.{n}" for n in fields
    )
    conditions = [_condition(resource, by_name[name], i) for i, name in enumerate(filters, start=1)]
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = f"SELECT {select} FROM {resource.table} AS t{where} ORDER BY t.{resource.order_by}"
    return ExportQuery(tuple(fields), sql, tuple(filters.values()))


def prepare(
    catalog: Mapping[str, Resource],
    resource: str | None,
    fmt: str | None = "ndjson",
    fields: Sequence[str] | None = None,
    filters: Mapping[str, Any] | None = None,
    compression: str | None = None,
    formula_guard: bool = True,
) -> tuple[ExportSpec, ExportQuery]:
    """Validate a request against the declarations. Raises :class:`ExportRequestError`."""
    res = catalog[_choose("resource", resource, list(catalog))]
    fmt = _choose("format", ("ndjson" if fmt is None else fmt).lower(), FORMATS)
    if compression in ("", "none", "identity"):
        compression = None
    if compression is not None:
        _choose("compression", compression.lower(), COMPRESSIONS)
        compression = compression.lower()
    chosen = tuple(fields) if fields else res.column_names
    unknown = [f for f in chosen if f not in res.column_map]
    if unknown:
        raise ExportRequestError(
            f"unknown field {unknown[0]!r} for {res.name}; allowed: {', '.join(res.column_names)}"
        )
    if len(set(chosen)) != len(chosen):
        raise ExportRequestError("fields must not repeat a name")
    declared = {f.name: f for f in res.filters}
    normalised: dict[str, str] = {}
    for name in sorted(filters or {}):
        if name not in declared:
            raise ExportRequestError(
                f"unknown filter {name!r} for {res.name}; allowed: {', '.join(declared)}"
            )
        normalised[name] = _normalise(res, declared[name], (filters or {})[name])
    spec = ExportSpec(res.name, fmt, chosen, normalised, compression, formula_guard)
    return spec, build_query(res, chosen, normalised)


def from_options(
    catalog: Mapping[str, Resource], options: Mapping[str, Any]
) -> tuple[ExportSpec, ExportQuery]:
    """Rebuild what :meth:`ExportSpec.options` stored (an export job's options)."""
    return prepare(
        catalog,
        options.get("resource"),
        options.get("format"),
        options.get("fields"),
        options.get("filters"),
        options.get("compression"),
        bool(options.get("formula_guard", True)),
    )


# ---------------------------------------------------------------- reading and encoding


def export_batches(
    conn: Any, query: ExportQuery, *, batch_bytes: int = BATCH_BYTES
) -> Iterator[pl.DataFrame]:
    """The query's rows as polars frames of about ``batch_bytes``, from one read-only
    ``REPEATABLE READ`` snapshot on the (non-autocommit) ADBC connection ``conn``.

    Yields at least one (possibly empty) frame, so writers always see the schema. When the
    iteration is left early, the connection is still inside ``COPY``: close it, do not reuse it.
    """
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if query.params:
            cur.execute(query.bind_sql, parameters=query.params)
        cur.adbc_statement.set_options(**{_BATCH_HINT: str(batch_bytes)})
        cur.execute(query.sql)
        reader = cur.fetch_record_batch()
        empty = True
        for batch in reader:
            empty = False
            yield _frame(batch)
        if empty:
            yield _frame(reader.schema.empty_table())
    conn.rollback()


def _frame(data: Any) -> pl.DataFrame:
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


class Encoded:
    """The bytes of an export, chunk by chunk (header, one chunk per batch, footer), optionally
    compressed (``compression``: gzip or zstd); counts rows and output bytes as they pass.

    The first frame is pulled before anything is emitted, so a failing query fails the first
    ``next()`` rather than a response that has already started.
    """

    def __init__(
        self, frames: Iterable[pl.DataFrame], writer: Writer, *, compression: str | None = None
    ) -> None:
        self.frames = iter(frames)
        self.writer = writer
        self.packer: Compressor | None = compressor(compression) if compression else None
        self.rows = 0
        self.bytes = 0

    def close(self) -> None:
        """Stop reading (the frames' generator ends its cursor)."""
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()

    def _parts(self) -> Iterator[bytes]:
        first = next(self.frames)
        self.rows += first.height
        yield self.writer.header()
        yield self.writer.batch(first)
        for frame in self.frames:
            self.rows += frame.height
            yield self.writer.batch(frame)
        yield self.writer.footer()

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts():
            data = self.packer.compress(part) if self.packer else part
            if data:
                self.bytes += len(data)
                yield data
        if self.packer:
            tail = self.packer.flush()
            self.bytes += len(tail)
            yield tail
