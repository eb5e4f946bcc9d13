"""The declarative schema of every resource: columns, types, rules, keys, references, filters.

Validators (``engine.imports.validate``), staging and merge SQL (``engine.imports.merge_sql``),
export queries and filters (``engine.exports.query``) and the API documentation are all derived
from these declarations.
Adding a resource means adding one ``Resource`` to :func:`catalog`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import polars as pl

from engine.settings import DEFAULT_ROLES


class Kind(StrEnum):
    UUID = "uuid"  #: canonical 8-4-4-4-12 UUID
    COMMENT_ID = "comment_id"  #: UUID, or ``cm_`` + 1-64 of [A-Za-z0-9_-]
    EMAIL = "email"
    SLUG = "slug"  #: kebab-case
    TEXT = "text"
    ENUM = "enum"
    BOOL = "bool"  #: true/false, case-insensitive; empty means the default
    TIMESTAMP = "timestamp"  #: ISO-8601 with Z/offset (UTC assumed when absent) or a date
    TAGS = "tags"  #: JSON array of non-empty strings, or ``a|b|c`` in CSV


#: PostgreSQL type of the *target* column for each kind.
PG_TYPES: Mapping[Kind, str] = {
    Kind.UUID: "uuid",
    Kind.COMMENT_ID: "text",
    Kind.EMAIL: "text",
    Kind.SLUG: "text",
    Kind.TEXT: "text",
    Kind.ENUM: "text",
    Kind.BOOL: "boolean",
    Kind.TIMESTAMP: "timestamptz",
    Kind.TAGS: "text[]",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    required: bool = False
    choices: tuple[str, ...] = ()
    max_words: int | None = None
    #: Table whose ``id`` this column must reference (decided in PostgreSQL, set-based).
    references: str | None = None
    #: Default used when an optional BOOL cell is empty.
    default: bool | None = None
    #: An optional TIMESTAMP that is stamped when absent (missing or empty): a new row gets the
    #: import time (the job's ``started_at``, one value per job, so a retried batch writes what
    #: the first try did) and an existing row keeps its own value (``engine.imports.merge_sql``).
    import_time_default: bool = False

    def __post_init__(self) -> None:
        if self.import_time_default and (self.kind is not Kind.TIMESTAMP or self.required):
            raise ValueError(f"{self.name}: only an optional TIMESTAMP can default to import time")

    @property
    def pg_type(self) -> str:
        return PG_TYPES[self.kind]


class FilterOp(StrEnum):
    EQ = "eq"
    IN = "in"  #: comma-separated list or JSON array
    GTE = "gte"
    LT = "lt"
    CONTAINS = "contains"  #: array column contains the value
    DOMAIN = "domain"  #: email ends with @value (case-insensitive)


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    column: str
    op: FilterOp


@dataclass(frozen=True, slots=True)
class RecordRule:
    """A rule across columns: where ``violated`` (a polars expression over typed columns) holds,
    ``field`` reports ``code`` with ``message`` (unless that field already failed)."""

    field: str
    code: str
    message: str
    violated: pl.Expr
    #: The same rule in SQL, ``{name}`` standing for a column's value: mode=merge checks it on
    #: the row a record would leave behind (the record's fields over the stored row's others).
    violated_sql: str | None = None


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    columns: tuple[Column, ...]
    #: Column matched case-insensitively / exactly when a record has no id.
    natural_key: str | None = None
    natural_key_ci: bool = False
    filters: tuple[Filter, ...] = ()
    rules: tuple[RecordRule, ...] = ()
    #: Column used for stable export order and pagination.
    order_by: str = "id"
    column_map: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_map", {c.name: c for c in self.columns})

    @property
    def table(self) -> str:
        return self.name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def import_time_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.import_time_default)

    @property
    def foreign_keys(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.references)

    @property
    def keys(self) -> tuple[str, ...]:
        """Columns that identify a record within a file (``id`` first)."""
        return ("id", self.natural_key) if self.natural_key else ("id",)

    def column(self, name: str) -> Column:
        return self.column_map[name]


def _time_filters(column: str, prefix: str) -> tuple[Filter, ...]:
    return (
        Filter(f"{prefix}_after", column, FilterOp.GTE),
        Filter(f"{prefix}_before", column, FilterOp.LT),
    )


def catalog(roles: tuple[str, ...] = DEFAULT_ROLES) -> dict[str, Resource]:
    """Every resource, keyed by name. ``roles`` comes from ``Settings.user_roles``."""
    users = Resource(
        name="users",
        columns=(
            Column("id", Kind.UUID),
            Column("email", Kind.EMAIL, required=True),
            Column("name", Kind.TEXT, required=True),
            Column("role", Kind.ENUM, required=True, choices=tuple(roles)),
            Column("active", Kind.BOOL, default=True),
            Column("created_at", Kind.TIMESTAMP, required=True),
            Column("updated_at", Kind.TIMESTAMP),
        ),
        natural_key="email",
        natural_key_ci=True,
        filters=(
            Filter("ids", "id", FilterOp.IN),
            Filter("role", "role", FilterOp.EQ),
            Filter("active", "active", FilterOp.EQ),
            Filter("email_domain", "email", FilterOp.DOMAIN),
            *_time_filters("created_at", "created"),
            Filter("updated_since", "updated_at", FilterOp.GTE),
        ),
    )
    articles = Resource(
        name="articles",
        columns=(
            Column("id", Kind.UUID),
            Column("slug", Kind.SLUG, required=True),
            Column("title", Kind.TEXT, required=True),
            Column("body", Kind.TEXT, required=True),
            Column("author_id", Kind.UUID, required=True, references="users"),
            Column("tags", Kind.TAGS),
            Column("status", Kind.ENUM, required=True, choices=("draft", "published")),
            Column("published_at", Kind.TIMESTAMP),
            Column("created_at", Kind.TIMESTAMP, import_time_default=True),
        ),
        natural_key="slug",
        rules=(
            RecordRule(
                "published_at",
                "invalid_value",
                "a draft must not have published_at (publish it, or clear published_at)",
                (pl.col("status") == "draft") & pl.col("published_at").is_not_null(),
                "{status} = 'draft' AND {published_at} IS NOT NULL",
            ),
        ),
        filters=(
            Filter("ids", "id", FilterOp.IN),
            Filter("status", "status", FilterOp.EQ),
            Filter("author_id", "author_id", FilterOp.EQ),
            Filter("tag", "tags", FilterOp.CONTAINS),
            *_time_filters("published_at", "published"),
        ),
    )
    comments = Resource(
        name="comments",
        columns=(
            Column("id", Kind.COMMENT_ID, required=True),
            Column("article_id", Kind.UUID, required=True, references="articles"),
            Column("user_id", Kind.UUID, required=True, references="users"),
            Column("body", Kind.TEXT, required=True, max_words=500),
            Column("created_at", Kind.TIMESTAMP, required=True),
        ),
        filters=(
            Filter("ids", "id", FilterOp.IN),
            Filter("article_id", "article_id", FilterOp.EQ),
            Filter("user_id", "user_id", FilterOp.EQ),
            *_time_filters("created_at", "created"),
        ),
    )
    return {r.name: r for r in (users, articles, comments)}


#: Names of all resources, in load order (a resource may reference only earlier ones).
RESOURCE_NAMES = ("users", "articles", "comments")
#: Import modes, the default first: ``upsert`` (a record replaces a matched row's fields),
#: ``insert`` (an existing key is an error), ``merge`` (a record updates only the fields it holds;
#: required fields only for new rows), ``validate_only`` (the full report, no writes).
IMPORT_MODES = ("upsert", "insert", "merge", "validate_only")
