"""JSON input keeps its types (issue #8): a value of the wrong JSON type is an error row, never
text. Reader + validator, no servers: a table of field x wrong type → (field, code, message) for
every resource in NDJSON and JSON-array form, the layouts that make finding a key hard, and a
hypothesis oracle (:mod:`json`) for the type the reader reports beside each value."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from engine.formats import json_types
from engine.formats.json_types import JsonType
from engine.formats.reader import Batch, read_batches
from engine.imports.validate import validate
from engine.resources import Column, Kind, Resource, catalog

RES = catalog()
UID = "3f2b8c1e-7d4a-4e2b-9c1d-2a3b4c5d6e7f"
GOOD: dict[str, dict[str, Any]] = {
    "users": {
        "id": UID,
        "email": "a@example.com",
        "name": "Ann",
        "role": "admin",
        "active": True,
        "created_at": "2024-03-01T12:00:00Z",
        "updated_at": "2024-03-02T12:00:00Z",
    },
    "articles": {
        "id": UID,
        "slug": "hello-world",
        "title": "T",
        "body": "B",
        "author_id": UID,
        "tags": ["a", "b"],
        "status": "published",
        "published_at": "2024-03-01T12:00:00Z",
        "created_at": "2024-03-01T12:00:00Z",
    },
    "comments": {
        "id": "cm_abc-1",
        "article_id": UID,
        "user_id": UID,
        "body": "nice",
        "created_at": "2024-03-01",
    },
}
#: One value of each JSON type, and how messages name it.
SAMPLES: dict[JsonType, tuple[Any, str]] = {
    JsonType.STRING: ("x", "a string"),
    JsonType.NUMBER: (5, "a number"),
    JsonType.BOOLEAN: (True, "a boolean"),
    JsonType.ARRAY: (["x"], "an array"),
    JsonType.OBJECT: ({"a": 1}, "an object"),
}
EXPECTED = {
    Kind.BOOL: (JsonType.BOOLEAN, "a JSON boolean (true/false)"),
    Kind.TAGS: (JsonType.ARRAY, "a JSON array of strings"),
}


def encode(records: list[Any], fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(records, indent=1, ensure_ascii=False).encode()
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def read(data: bytes, fmt: str, resource: Resource, batch_rows: int = 1000) -> list[Batch]:
    return list(
        read_batches(
            [data],
            fmt,
            resource.column_names,
            [],
            batch_rows=batch_rows,
            max_record_bytes=1 << 20,
            max_decompressed_bytes=1 << 30,
        )
    )


def errors_of(records: list[Any], fmt: str, resource: str) -> list[tuple[Any, ...]]:
    res = RES[resource]
    out: list[tuple[Any, ...]] = []
    for batch in read(encode(records, fmt), fmt, res):
        assert batch.errors.is_empty(), batch.errors
        checked = validate(batch.frame, res)
        out += checked.errors.select("row", "field", "code", "message").rows()
    return out


def wrong_types() -> list[Any]:
    cases = []
    for resource, res in RES.items():
        for col in res.columns:
            expected, wording = EXPECTED.get(col.kind, (JsonType.STRING, "a JSON string"))
            for got, (value, name) in SAMPLES.items():
                if got is not expected:
                    message = f"{col.name} must be {wording}; got {name}"
                    case = f"{resource}-{col.name}-{got.name.lower()}"
                    cases.append(pytest.param(resource, col.name, value, message, id=case))
    return cases


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
@pytest.mark.parametrize(("resource", "field", "value", "message"), wrong_types())
def test_a_value_of_the_wrong_json_type_is_an_invalid_format_row(
    fmt: str, resource: str, field: str, value: Any, message: str
) -> None:
    good = GOOD[resource]
    records = [good, {**good, field: value}, good]
    assert errors_of(records, fmt, resource) == [(2, field, "invalid_format", message)]


TAGS_TYPE = "tags must be a JSON array of strings; got "
TAGS_ITEMS = "tags must be a JSON array of non-empty strings (without NUL characters)"
ACTIVE = "active must be a JSON boolean (true/false); got "


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
@pytest.mark.parametrize(
    ("resource", "changes", "expected"),
    [
        # the example: a string is not a tag list (the a|b|c form is CSV's)
        ("articles", {"tags": "not-a-list"}, ("tags", TAGS_TYPE + "a string")),
        ("articles", {"tags": "a|b"}, ("tags", TAGS_TYPE + "a string")),
        ("articles", {"tags": ""}, ("tags", TAGS_TYPE + "a string")),
        ("articles", {"tags": [1, 2]}, ("tags", TAGS_ITEMS)),
        ("articles", {"tags": [["a"]]}, ("tags", TAGS_ITEMS)),
        ("users", {"active": "true"}, ("active", ACTIVE + "a string")),
        ("users", {"active": "TRUE"}, ("active", ACTIVE + "a string")),
        ("users", {"active": 1}, ("active", ACTIVE + "a number")),
        ("users", {"active": ""}, ("active", ACTIVE + "a string")),
        ("users", {"name": 1984}, ("name", "name must be a JSON string; got a number")),
        ("users", {"name": -0.5}, ("name", "name must be a JSON string; got a number")),
        ("users", {"name": False}, ("name", "name must be a JSON string; got a boolean")),
        ("users", {"role": ["admin"]}, ("role", "role must be a JSON string; got an array")),
        ("comments", {"id": 7}, ("id", "id must be a JSON string; got a number")),
        ("comments", {"user_id": 2024}, ("user_id", "user_id must be a JSON string; got a number")),
        # null is absent: required fields say so, optional ones are fine
        ("users", {"email": None}, ("email", "email is required")),
        ("comments", {"body": None}, ("body", "body is required")),
        ("users", {"name": ""}, ("name", "name is required")),
    ],
)  # fmt: skip
def test_json_type_rules(
    fmt: str, resource: str, changes: dict[str, Any], expected: tuple[str, str]
) -> None:
    records = [{**GOOD[resource], **changes}]
    got = [(field, message) for _, field, _, message in errors_of(records, fmt, resource)]
    assert got == [expected]


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
@pytest.mark.parametrize(
    ("resource", "changes"),
    [
        ("users", {"active": False}),
        ("users", {"active": None}),  # the default
        ("users", {"updated_at": None}),
        ("articles", {"tags": []}),
        ("articles", {"tags": None}),
        ("articles", {"published_at": None, "status": "draft"}),
        # strings that read like other types are strings
        ("articles", {"title": "1984", "body": "true", "slug": "2024"}),
        ("articles", {"title": "[not an array]", "body": '{"a": 1}'}),
        ("users", {"name": "-1.5e3"}),
    ],
)
def test_values_of_the_right_type_are_accepted(
    fmt: str, resource: str, changes: dict[str, Any]
) -> None:
    assert errors_of([{**GOOD[resource], **changes}], fmt, resource) == []


def test_csv_keeps_its_text_forms() -> None:
    data = b"id,slug,title,body,author_id,tags,status,active\n" + (
        f"{UID},a-b,1984,true,{UID},a|b,published,TRUE\n".encode()
    )
    for resource in ("articles",):
        res = RES[resource]
        (batch,) = list(
            read_batches(
                [data],
                "csv",
                res.column_names,
                res.required_columns,
                batch_rows=10,
                max_record_bytes=1 << 20,
                max_decompressed_bytes=1 << 30,
            )
        )
        assert not any(c.startswith("__json_") for c in batch.frame.columns)
        checked = validate(batch.frame, res)
        assert checked.errors.is_empty(), checked.errors
        assert checked.valid["tags"].to_list() == [["a", "b"]]
        assert checked.valid["title"].to_list() == ["1984"]


# ---------------------------------------------------------------- where the key is found

COLS = ("id", "name", "x")
S, N, B, A, OBJ, _ = (
    JsonType.STRING,
    JsonType.NUMBER,
    JsonType.BOOLEAN,
    JsonType.ARRAY,
    JsonType.OBJECT,
    JsonType.ABSENT,
)


def types_of(data: bytes, fmt: str = "ndjson", batch_rows: int = 1000) -> list[tuple[int, ...]]:
    res = Resource("t", tuple(Column(c, Kind.TEXT) for c in COLS))
    out: list[tuple[int, ...]] = []
    for batch in read(data, fmt, res, batch_rows):
        types = json_types.types_of(batch.frame, COLS)
        out += [tuple(int(types[c][i]) for c in COLS) for i in range(batch.frame.height)]
    return out


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (rb'{"id":"a","name":5,"x":true}', (S, N, B)),
        (rb'{"id" : 1 , "name" :"n", "x"  :  [1]}', (N, S, A)),  # spaces around colons
        (rb'{"m":{"id":1,"x":"s"},"id":"top","x":{"id":"1"}}', (S, _, OBJ)),  # nested keys first
        (rb'{"\u0069d":1,"name":"x"}', (N, S, _)),  # a key written with an escape
        (rb'{"id":"1","id":2}', (S, _, _)),  # repeated key: the first one counts, as polars does
        (rb'{"id":[1],"id":"2"}', (A, _, _)),
        (rb'{"x":"{\"id\":1}","id":"true"}', (S, _, S)),  # a key-like text inside a string
        (rb'{"x\"id":1,"id":"5"}', (S, _, _)),  # a key ending in "id"
        (rb'{"id":null,"name":"null","x":"false"}', (_, S, S)),
        (rb'{"id":"{\"a\"","x":"[1, 2]"}', (S, _, S)),
        (rb'{"id":-0.0,"name":1e5,"x":"1e5"}', (N, N, S)),
    ],
)
def test_the_type_beside_each_value(line: bytes, expected: tuple[int, ...]) -> None:
    assert types_of(line + b"\n") == [expected]
    assert types_of(b"[\n" + line + b"\n]", "json") == [expected]


# ---------------------------------------------------------------- against json itself

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=6)
    | st.sampled_from(["true", "1984", "[x]", "{", '"id":1', "-2.5", 'a\\"id":'])
)
KEYS = st.sampled_from([*COLS, "extra", "i", 'x"id'])
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
OBJECTS = st.lists(st.tuples(KEYS, VALUES), max_size=6)
LAYOUT = st.sampled_from(
    [(",", ":"), (", ", ": "), (" , ", " : "), (",\t", "\t:\t")]
)  # separators between members, and around colons


def _dump(members: list[tuple[str, Any]], seps: tuple[str, str], escape_keys: bool) -> str:
    """An object with these members in order, repeats kept (json.dumps would merge them)."""
    item, colon = seps
    parts = []
    for key, value in members:
        name = json.dumps(key)
        if escape_keys and key == "id":
            name = '"\\u0069d"'
        parts.append(name + colon + json.dumps(value, separators=(item, colon)))
    return "{" + item.join(parts) + "}"


def _oracle(text: str) -> tuple[int, ...]:
    def first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            out.setdefault(k, v)
        return out

    value = json.loads(text, object_pairs_hook=first_wins)
    out = []
    for c in COLS:
        v = value.get(c)
        if v is None:
            out.append(JsonType.ABSENT)
        elif isinstance(v, str):
            out.append(JsonType.STRING)
        elif isinstance(v, bool):
            out.append(JsonType.BOOLEAN)
        elif isinstance(v, int | float):
            out.append(JsonType.NUMBER)
        else:
            out.append(JsonType.ARRAY if isinstance(v, list) else JsonType.OBJECT)
    return tuple(int(t) for t in out)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    records=st.lists(st.tuples(OBJECTS, LAYOUT, st.booleans()), min_size=1, max_size=12),
    array=st.booleans(),
    batch_rows=st.integers(1, 5),
)
def test_types_agree_with_json(
    records: list[tuple[list[tuple[str, Any]], tuple[str, str], bool]],
    array: bool,
    batch_rows: int,
) -> None:
    texts = [_dump(*r) for r in records]
    data = ("[" + ",\n".join(texts) + "]" if array else "\n".join(texts) + "\n").encode()
    note(data.decode())
    assert types_of(data, "json" if array else "ndjson", batch_rows) == [_oracle(t) for t in texts]


STRICT_FIELDS = [
    (resource, col.name)
    for resource, res in RES.items()
    for col in res.columns
    if col.kind in (Kind.UUID, Kind.COMMENT_ID, Kind.EMAIL, Kind.TIMESTAMP)
]


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    field=st.sampled_from(STRICT_FIELDS),
    value=VALUES.filter(lambda v: v is not None and not isinstance(v, str)),
    fmt=st.sampled_from(["ndjson", "json"]),
)
def test_no_other_type_passes_a_strict_check(field: tuple[str, str], value: Any, fmt: str) -> None:
    """validate looks up the JSON type of UUID, email, timestamp and comment id values only
    where their check failed: whatever polars makes of a non-string must fail it."""
    resource, name = field
    (error,) = errors_of([{**GOOD[resource], name: value}], fmt, resource)
    assert error[1:3] == (name, "invalid_format")
    assert error[3].startswith(f"{name} must be a JSON string; got ")
