"""Column mapping, ``header_case`` and merge presence below the service: the request's checks
(``engine.formats.mapping``), JSON keys (``engine.formats.keys``), the reader and validation."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.errors import MissingColumns
from engine.formats.keys import fold_keys, holding
from engine.formats.mapping import (
    PRESENT,
    FieldMap,
    MappingError,
    canonical,
    fold,
    parse_header_case,
    parse_mapping,
)
from engine.formats.reader import Header, read_batches
from engine.imports.validate import validate
from engine.resources import catalog

USERS = catalog()["users"]
FIELDS = USERS.column_names
UID = "3f2b8c1e-7d4a-4e2b-9c1d-2a3b4c5d6e7f"


def read(
    data: bytes, fmt: str, fields: FieldMap | None, required: tuple[str, ...] = ()
) -> tuple[list[pl.DataFrame], Header]:
    headers: list[Header] = []
    frames = [
        b.frame
        for b in read_batches(
            [data], fmt, FIELDS, required, batch_rows=100, max_record_bytes=1 << 20,
            max_decompressed_bytes=1 << 30, header_out=headers, fields=fields,
            match_keys=USERS.keys if fields is not None and fields.presence else (),
        )
    ]  # fmt: skip
    return frames, headers[0]


def lines(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.mark.parametrize(
    ("raw", "header_case", "expected"),
    [
        (None, "exact", {}),
        ("", "exact", {}),
        ("{}", "exact", {}),
        ('{"Email Address": "email"}', "exact", {"Email Address": "email"}),
        ({"Mail": "email", "MAIL": "name"}, "exact", {"Mail": "email", "MAIL": "name"}),
        ({"name": "email", "email": "name"}, "insensitive", {"name": "email", "email": "name"}),
    ],
)
def test_accepted_mappings(raw: Any, header_case: str, expected: dict[str, str]) -> None:
    assert parse_mapping(raw, FIELDS, header_case) == expected


@pytest.mark.parametrize(
    ("raw", "header_case", "message"),
    [
        ('{"X": "phone"}', "exact", "mapping entry \"X\": 'phone' is not a field"),
        ('{"A": "email", "B": "email"}', "exact", "'A' and 'B' both map to 'email'"),
        ('{"A": null}', "exact", "the field must be a string; got NoneType"),
        ('{"A": ["email"]}', "exact", "the field must be a string; got list"),
        ('{"A": "email", "A": "name"}', "exact", "the source 'A' appears twice"),
        ('{"": "email"}', "exact", "a source column name is empty"),
        ('{"a\\u0000b": "email"}', "exact", "must not hold control characters"),
        ({"x" * 257: "email"}, "exact", "at most 256 characters"),
        ('"email"', "exact", "mapping must be a JSON object"),
        ("{", "exact", "mapping must be a JSON object"),
        ({"Mail": "email", "MAIL": "name"}, "insensitive", "differ only in case"),
        (json.dumps({f"c{i}": "email" for i in range(8)}), "exact", "has 8 entries"),
        ("{" + " " * (16 * 1024) + "}", "exact", "longer than 16384 bytes"),
    ],
)
def test_refused_mappings_name_the_entry(raw: Any, header_case: str, message: str) -> None:
    with pytest.raises(MappingError, match=None) as caught:
        parse_mapping(raw, FIELDS, header_case)
    assert message in str(caught.value)


def test_header_case_and_canonical_form() -> None:
    assert parse_header_case(None) == parse_header_case(" ") == "exact"
    assert parse_header_case("insensitive") == "insensitive"
    with pytest.raises(MappingError, match="header_case must be one of exact, insensitive"):
        parse_header_case("Insensitive")
    assert canonical({"b": "name", "a": "email"}) == canonical({"a": "email", "b": "name"})
    assert fold("ÉMAIL Address") == "Émail address"  # ASCII letters only


def test_field_map_rules() -> None:
    fm = FieldMap(FIELDS, {"Mail": "email", "name": "role"}, insensitive=True)
    assert fm.field_of("MAIL") == "email"
    assert fm.field_of("email") is None  # a mapped field is read from its source only
    assert fm.field_of("NAME") == "role"  # a source feeds only its field
    assert fm.source("name") is None  # ... so the field "name" has no column
    assert fm.field_of("Id") == "id"
    assert fm.json_keys()["email"] == "mail"
    assert fm.shown() == {"email": "Mail", "role": "name"}
    assert fm.expected("email") == "'Mail' (→ email)"
    assert FieldMap.of(FIELDS, {"mapping": {"Mail": "email"}, "header_case": "insensitive"}) == (
        FieldMap(FIELDS, {"Mail": "email"}, insensitive=True)
    )
    assert FieldMap.of(FIELDS, None).plain and not FieldMap(FIELDS, presence=True).plain


def records_of(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    ends = np.array([i + 1 for i, b in enumerate(data) if b == 0x0A], dtype=np.int64)
    return np.concatenate(([0], ends[:-1])), ends


def test_keys_folded_and_held_at_the_top_level_only() -> None:
    data = (
        b'{"Email": "A\\"B:C", "x": {"Name": 1}, "NAME" : null}\n'
        b'{"a": "\\\\", "Name": "z"}\n'
        b"[1, 2]\n"
        b'{"odd: 1}\n'  # an unbalanced quote: the next record is still read right
        b'{ "Name":1,"nAmE":2}\n'
    )
    starts, ends = records_of(data)
    folded = fold_keys(data, starts, ends)
    assert len(folded) == len(data)
    assert folded.split(b"\n")[0] == b'{"email": "A\\"B:C", "x": {"Name": 1}, "name" : null}'
    assert folded.split(b"\n")[4] == b'{ "name":1,"name":2}'
    held = holding(folded, starts, ends, ["name", "email", "x", "Name"])
    assert held["name"].tolist() == [True, True, False, False, True]
    assert held["email"].tolist() == [True, False, False, False, False]
    assert held["x"].tolist() == [True, False, False, False, False]
    assert not held["Name"].any()
    # without nested objects every colon outside strings is a top-level key's (a shortcut)
    flat = b'{"A": "x:y", "b": [1, 2]}\n[1]\n{"B":1 ,"c" :"\\":"}\n'
    starts, ends = records_of(flat)
    assert fold_keys(flat, starts, ends) == flat.replace(b'"A"', b'"a"').replace(b'"B"', b'"b"')
    held = holding(fold_keys(flat, starts, ends), starts, ends, ["b", "c"])
    assert (held["b"].tolist(), held["c"].tolist()) == ([True, False, True], [False, False, True])


def test_csv_header_through_a_mapping() -> None:
    fm = FieldMap(FIELDS, {"Email Address": "email"}, insensitive=True)
    data = f"ID,Email Address,NAME,role,created_at,Notes\n{UID},a@b.co,A,admin,2024-01-01,x\n"
    frames, header = read(data.encode(), "csv", fm, USERS.required_columns)
    assert frames[0].select("id", "email", "name").row(0) == (UID, "a@b.co", "A")
    assert header.shown == {"id": "ID", "email": "Email Address", "name": "NAME"}
    assert header.warnings == ["ignored unknown column(s): Notes"]
    with pytest.raises(MissingColumns, match=r"lacks required column\(s\): 'Email Address'"):
        read(b"id,email,name,role,created_at\n1,2,3,4,5\n", "csv", fm, USERS.required_columns)
    with pytest.raises(MissingColumns, match="columns Name, NAME, which all name name"):
        read(b"Name,NAME\n1,2\n", "csv", FieldMap(FIELDS, insensitive=True))
    _, header = read(b"id,Mail\n1,2\n", "csv", FieldMap(FIELDS, {"Phone": "name"}))
    assert header.warnings == [
        "ignored unknown column(s): Mail",
        "mapped column(s) not in the file: Phone",
    ]


def test_merge_presence_csv_and_json() -> None:
    fm = FieldMap(FIELDS, presence=True)
    frames, _ = read(f"id,name\n{UID},A\n".encode(), "csv", fm)
    assert frames[0][PRESENT].to_list() == [0b101]
    with pytest.raises(MissingColumns, match="mode=merge matches records by id or email"):
        read(b"name\nA\n", "csv", fm)
    data = lines([{"id": UID, "name": None}, {"email": "a@b.co", "x": {"id": 1}}, {}])
    data += b"not json\n"
    frames, _ = read(data, "ndjson", fm)
    assert frames[0][PRESENT].to_list() == [0b101, 0b10, 0]
    frames, _ = read(b"not json\n", "ndjson", fm)
    assert frames[0].height == 0 and PRESENT in frames[0].columns


def test_validation_leaves_absent_required_fields_to_the_merge() -> None:
    fm = FieldMap(FIELDS, {"Who": "name"}, presence=True)
    data = lines([{"id": UID, "Who": None}, {"id": UID, "role": "boss"}, {"id": UID, "Who": 5}])
    frames, _ = read(data, "ndjson", fm)
    checked = validate(frames[0], USERS, keys=fm.json_keys())
    got = checked.errors.select("row", "field", "code").rows()
    # held and null: required; absent: left to the merge; wrong type: looked up under "Who"
    assert got == [(1, "name", "required"), (2, "role", "invalid_value"),
                   (3, "name", "invalid_format")]  # fmt: skip
    assert checked.valid.height == 0
    frames, _ = read(lines([{"id": UID, "name": "A"}]), "ndjson", fm)
    valid = validate(frames[0], USERS).valid
    assert valid[PRESENT].to_list() == [0b1] and valid["active"].to_list() == [True]


def test_comments_keep_id_required_in_a_merge() -> None:
    comments = catalog()["comments"]
    fm = FieldMap(comments.column_names, presence=True)
    batches = read_batches(
        [lines([{"body": "x"}])], "ndjson", comments.column_names, (), batch_rows=10,
        max_record_bytes=1 << 20, max_decompressed_bytes=1 << 30, fields=fm,
    )  # fmt: skip
    frame = next(iter(batches)).frame
    assert validate(frame, comments).errors.select("field", "code").rows() == [("id", "required")]
