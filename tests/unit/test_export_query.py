"""Export requests → validated spec and SQL; encoding of frames — no servers.

The SQL is executed against PostgreSQL (and each filter counted against direct SQL) in
``tests/integration/test_exports.py``; here: what gets accepted, what is refused and how, and
that no input value ever becomes SQL text.
"""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime

import polars as pl
import pyarrow.parquet as pq
import pytest

from engine.exports.query import (
    Encoded,
    ExportRequestError,
    build_query,
    from_options,
    prepare,
)
from engine.exports.writers import writer_for
from engine.resources import catalog

CAT = catalog()
UID = "3F2B8C1E-7D4A-4E2B-9C1D-2A3B4C5D6E7F"


def test_defaults_select_every_column_uuid_as_text_in_declared_order() -> None:
    spec, query = prepare(CAT, "articles")
    assert spec.format == "ndjson" and spec.compression is None and spec.formula_guard
    assert query.columns == CAT["articles"].column_names
    assert query.sql == (
        "SELECT t.id::text AS id, t.slug, t.title, t.body, t.author_id::text AS author_id, "
        "t.tags, t.status, t.published_at, t.created_at FROM articles AS t ORDER BY t.id"
    )
    assert query.params == ()


def test_fields_keep_the_given_order() -> None:
    spec, query = prepare(CAT, "users", "csv", ["email", "id"])
    assert spec.fields == ("email", "id")
    assert query.sql.startswith("SELECT t.email, t.id::text AS id FROM users AS t")


@pytest.mark.parametrize(
    ("resource", "filters", "condition", "params"),
    [
        (
            "users",
            {"role": "Editor"},
            "t.role = current_setting('bulkio.export_p1')::text",
            ("editor",),
        ),
        (
            "users",
            {"active": "FALSE"},
            "t.active = current_setting('bulkio.export_p1')::boolean",
            ("false",),
        ),
        (
            "users",
            {"active": True},
            "t.active = current_setting('bulkio.export_p1')::boolean",
            ("true",),
        ),
        (
            "users",
            {"email_domain": "@Example.COM"},
            "right(lower(t.email), length(current_setting('bulkio.export_p1')) + 1) = "
            "'@' || current_setting('bulkio.export_p1')",
            ("example.com",),
        ),
        (
            "users",
            {"created_after": "2024-03-01"},
            "t.created_at >= current_setting('bulkio.export_p1')::timestamptz",
            ("2024-03-01T00:00:00+00:00",),
        ),
        (
            "users",
            {"created_before": "2024-03-01T12:00:00+02:00"},
            "t.created_at < current_setting('bulkio.export_p1')::timestamptz",
            ("2024-03-01T12:00:00+02:00",),
        ),
        (
            "users",
            {"updated_since": "2024-03-01T12:00:00Z"},
            "t.updated_at >= current_setting('bulkio.export_p1')::timestamptz",
            ("2024-03-01T12:00:00+00:00",),
        ),
        (
            "users",
            {"ids": f"{UID}, {UID.lower()}"},
            "t.id = ANY(ARRAY(SELECT jsonb_array_elements_text("
            "current_setting('bulkio.export_p1')::jsonb))::uuid[])",
            (json.dumps([UID.lower(), UID.lower()]),),
        ),
        (
            "comments",
            {"ids": ["cm_a", "x'); DROP TABLE users; --"]},
            "t.id = ANY(ARRAY(SELECT jsonb_array_elements_text("
            "current_setting('bulkio.export_p1')::jsonb))::text[])",
            (json.dumps(["cm_a", "x'); DROP TABLE users; --"]),),
        ),
        (
            "articles",
            {"tag": "it's"},
            "current_setting('bulkio.export_p1') = ANY(t.tags)",
            ("it's",),
        ),
        (
            "articles",
            {"author_id": UID},
            "t.author_id = current_setting('bulkio.export_p1')::uuid",
            (UID.lower(),),
        ),
        (
            "articles",
            {"status": "draft"},
            "t.status = current_setting('bulkio.export_p1')::text",
            ("draft",),
        ),
        (
            "articles",
            {"published_after": "2024-01-01T00:00:00Z"},
            "t.published_at >= current_setting('bulkio.export_p1')::timestamptz",
            ("2024-01-01T00:00:00+00:00",),
        ),
        (
            "comments",
            {"article_id": UID},
            "t.article_id = current_setting('bulkio.export_p1')::uuid",
            (UID.lower(),),
        ),
        (
            "comments",
            {"user_id": UID},
            "t.user_id = current_setting('bulkio.export_p1')::uuid",
            (UID.lower(),),
        ),
    ],
)
def test_each_filter_becomes_a_typed_condition_over_a_bound_value(
    resource: str, filters: dict[str, object], condition: str, params: tuple[str, ...]
) -> None:
    _, query = prepare(CAT, resource, filters=filters)
    assert f" WHERE {condition} ORDER BY t.id" in query.sql
    assert query.params == params
    assert query.bind_sql == "SELECT set_config('bulkio.export_p1', $1, true)"
    for value in params:
        assert value not in query.sql


def test_several_filters_are_anded_in_name_order_with_one_setting_each() -> None:
    _, query = prepare(CAT, "users", filters={"role": "admin", "active": "true"})
    assert (
        "t.active = current_setting('bulkio.export_p1')::boolean AND "
        "t.role = current_setting('bulkio.export_p2')::text" in query.sql
    )
    assert query.params == ("true", "admin")
    assert query.bind_sql == (
        "SELECT set_config('bulkio.export_p1', $1, true), set_config('bulkio.export_p2', $2, true)"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resource": "posts"}, "resource must be one of users, articles, comments; got 'posts'"),
        ({"resource": None}, "resource must be one of users, articles, comments; got None"),
        ({"resource": "users", "fmt": "xml"}, "format must be one of csv, ndjson, json, parquet"),
        ({"resource": "users", "compression": "br"}, "compression must be one of gzip, zstd"),
        (
            {"resource": "users", "fields": ["id", "password"]},
            "unknown field 'password' for users; allowed: id, email, name, role, active, "
            "created_at, updated_at",
        ),
        ({"resource": "users", "fields": ["id", "id"]}, "fields must not repeat a name"),
        (
            {"resource": "comments", "filters": {"updated_since": "2024-01-01"}},
            "unknown filter 'updated_since' for comments; allowed: ids, article_id, user_id, "
            "created_after, created_before",
        ),
        (
            {"resource": "users", "filters": {"role": "boss"}},
            "filter 'role' must be one of admin, author, editor, reader, viewer; got 'boss'",
        ),
        (
            {"resource": "users", "filters": {"active": "maybe"}},
            "filter 'active' must be true or false; got 'maybe'",
        ),
        (
            {"resource": "users", "filters": {"created_after": "yesterday"}},
            "filter 'created_after': 'yesterday' is not an ISO-8601 timestamp",
        ),
        ({"resource": "users", "filters": {"ids": "a,b"}}, "filter 'ids': 'a' is not a UUID"),
        ({"resource": "users", "filters": {"ids": " , "}}, "filter 'ids': the list is empty"),
        ({"resource": "users", "filters": {"ids": "[1, 2]"}}, "filter 'ids': give a list"),
        ({"resource": "articles", "filters": {"tag": ""}}, "filter 'tag': give one non-empty"),
        ({"resource": "articles", "filters": {"tag": ["a", "b"]}}, "filter 'tag': give one"),
        (
            {"resource": "articles", "filters": {"author_id": "42"}},
            "filter 'author_id': '42' is not a UUID",
        ),
    ],
)
def test_bad_requests_name_what_is_allowed(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ExportRequestError) as info:
        prepare(CAT, **kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_options_round_trip_through_a_job_and_name_the_file() -> None:
    spec, query = prepare(
        CAT, "users", "CSV", ["email"], {"role": "admin", "ids": [UID]}, "GZIP", formula_guard=False
    )
    stored = json.loads(json.dumps(spec.options()))
    again, query2 = from_options(CAT, stored)
    assert again == spec and query2 == query
    assert spec.file_name == "users.csv.gz"
    assert stored["filters"] == {"ids": json.dumps([UID.lower()]), "role": "admin"}


def test_build_query_takes_identifiers_only_from_the_declaration() -> None:
    res = CAT["comments"]
    query = build_query(res, ["body", "id"], {})
    assert query.sql == "SELECT t.body, t.id FROM comments AS t ORDER BY t.id"


# ---------------------------------------------------------------- encoding


def frames() -> list[pl.DataFrame]:
    ts = datetime(2024, 3, 1, 12, 0, 0, 5, tzinfo=UTC)
    first = pl.DataFrame({"id": ["a", "b"], "tags": [["x", 'q"'], []], "at": [ts, None]})
    return [first, first.clear(), first.with_columns(id=pl.lit("=1+1"))]


def test_json_output_is_one_array_and_ndjson_one_object_a_line() -> None:
    data = b"".join(Encoded(frames(), writer_for("json", [])))
    rows = json.loads(data)
    assert [r["id"] for r in rows] == ["a", "b", "=1+1", "=1+1"]
    assert rows[0] == {"id": "a", "tags": ["x", 'q"'], "at": "2024-03-01T12:00:00.000005Z"}
    lines = b"".join(Encoded(frames(), writer_for("ndjson", []))).splitlines()
    assert [json.loads(line) for line in lines] == rows


def test_empty_exports_are_still_valid_files() -> None:
    empty = [frames()[0].clear()]
    assert json.loads(b"".join(Encoded(empty, writer_for("json", [])))) == []
    assert b"".join(Encoded(empty, writer_for("ndjson", []))) == b""
    csv = b"".join(Encoded(empty, writer_for("csv", ["id", "tags", "at"])))
    assert csv == b"id,tags,at\n"
    parquet = b"".join(Encoded(empty, writer_for("parquet", [])))
    assert pq.read_table(io.BytesIO(parquet)).column_names == ["id", "tags", "at"]


def test_csv_quotes_tags_as_json_and_guards_formulas_unless_switched_off() -> None:
    cols = ["id", "tags", "at"]
    guarded = b"".join(Encoded(frames(), writer_for("csv", cols))).decode()
    assert guarded.splitlines()[1] == 'a,"[""x"",""q\\""""]",2024-03-01T12:00:00.000005Z'
    assert "\n'=1+1," in guarded
    raw = b"".join(Encoded(frames(), writer_for("csv", cols, formula_guard=False)))
    assert b"\n=1+1," in raw


def test_gzip_output_decompresses_to_the_plain_output_and_counts_rows_and_bytes() -> None:
    plain = b"".join(Encoded(frames(), writer_for("ndjson", [])))
    packed = Encoded(frames(), writer_for("ndjson", []), compression="gzip")
    data = b"".join(packed)
    assert gzip.decompress(data) == plain
    assert packed.rows == 4 and packed.bytes == len(data)


def test_a_failing_source_fails_the_first_chunk() -> None:
    def broken() -> list[pl.DataFrame]:
        raise RuntimeError("query failed")

    with pytest.raises(RuntimeError, match="query failed"):
        next(iter(Encoded(iter(broken, None), writer_for("json", []))))
