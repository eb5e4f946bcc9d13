"""Validate a batch of raw string records against a resource: (valid typed rows, error rows).

Every rule is a vectorised polars expression or a native check over a whole column
(``engine.checks``); there is no per-record Python. Each column reports at most one error (the
first failing rule: required, then format, then value); a record is valid when no column failed.
Keys, uniqueness and foreign keys are *not* decided here but in PostgreSQL
(``engine.imports.load``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine import checks
from engine.error_rows import ERROR_SCHEMA, empty_errors
from engine.formats.json_types import ARTICLED, RECORD, JsonType, RecordTypes, maybe_not_string
from engine.formats.mapping import PRESENT
from engine.formats.parse import LINE, NUL_SHOWN, ROW
from engine.resources import Column, Kind, Resource

#: Longest ``value`` echoed in an error row (bodies of 500+ words are cut here).
MAX_VALUE_CHARS = 256
#: Words of a comment body; stricter limits belong in resources.py.
TIMESTAMP_HELP = "an ISO-8601 timestamp such as 2024-03-01T12:34:56Z"
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_JSON_STRING_ARRAY = rf"^\[\s*(?:{_JSON_STRING}\s*(?:,\s*{_JSON_STRING}\s*)*)?\]$"


@dataclass(frozen=True, slots=True)
class Validated:
    valid: pl.DataFrame
    errors: pl.DataFrame


#: The JSON type each kind takes in JSON input (strings for every other kind). CSV cells are
#: text: there ``active`` may be ``true``/``TRUE``/… and ``tags`` ``a|b|c``.
JSON_TYPES = {Kind.BOOL: JsonType.BOOLEAN, Kind.TAGS: JsonType.ARRAY}
#: Kinds whose check rejects whatever text polars makes of a number, boolean, array or object:
#: only their failing values need their JSON type looked up (for the message). Other string
#: kinds (free text, slugs, enums) would accept ``1984`` or ``true``.
_STRICT = (Kind.UUID, Kind.COMMENT_ID, Kind.EMAIL, Kind.TIMESTAMP)
#: Internal codes of a JSON value of the wrong type, reported as ``invalid_format``.
_WRONG_TYPE = {t: f"json:{t.name.lower()}" for t in ARTICLED}


def _type_message(col: Column, got: JsonType) -> str:
    match JSON_TYPES.get(col.kind, JsonType.STRING):
        case JsonType.BOOLEAN:
            expected = "a JSON boolean (true/false)"
        case JsonType.ARRAY:
            expected = "a JSON array of strings"
        case _:
            expected = "a JSON string"
    return f"{col.name} must be {expected}; got {ARTICLED[got]}"


def _format_message(col: Column, *, json: bool = False) -> str:
    name = col.name
    match col.kind:
        case Kind.UUID:
            return f"{name} must be a UUID like 3f2b8c1e-7d4a-4e2b-9c1d-2a3b4c5d6e7f"
        case Kind.COMMENT_ID:
            return f"{name} must be a UUID or cm_ followed by 1-64 letters, digits, _ or -"
        case Kind.EMAIL:
            return f"{name} is not a valid email address"
        case Kind.SLUG:
            return (
                f"{name} must be kebab-case: lowercase letters and digits joined by single hyphens"
            )
        case Kind.BOOL:
            return f"{name} must be true or false"
        case Kind.TIMESTAMP:
            return f"{name} must be {TIMESTAMP_HELP}"
        case Kind.TAGS if json:
            return f"{name} must be a JSON array of non-empty strings (without NUL characters)"
        case Kind.TAGS:
            return (
                f"{name} must be a JSON array of non-empty strings or a |-separated list "
                "(without NUL characters)"
            )
        case Kind.TEXT:
            return (
                f"{name} must not contain NUL (\\x00) characters: PostgreSQL text cannot hold them"
            )
        case _:
            return f"{name} has an invalid format"


def messages(col: Column, *, json: bool = False) -> dict[str, str]:
    """The message for each code this column can report (stable, documented in the README);
    ``json``: for JSON input, with the wrong-type messages under internal codes."""
    out = {
        "required": f"{col.name} is required",
        "invalid_format": _format_message(col, json=json),
    }
    if col.choices:
        out["invalid_value"] = f"{col.name} must be one of: {', '.join(col.choices)}"
    if col.max_words:
        out["too_long"] = f"{col.name} must have at most {col.max_words} words"
    if json:
        out.update({code: _type_message(col, t) for t, code in _WRONG_TYPE.items()})
    return out


#: Accepted timestamp layouts, most common first; later ones only see values earlier ones missed.
_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")


def parse_timestamps(raw: pl.Series) -> pl.Series:
    """ISO-8601 → UTC microseconds; null where unparseable. Naive values are taken as UTC."""
    s = raw.str.strip_chars()
    out = s.str.to_datetime(_AWARE_FORMATS[0], strict=False, time_unit="us", time_zone="UTC")
    fallbacks = [(f, True) for f in _AWARE_FORMATS[1:]] + [(f, False) for f in _NAIVE_FORMATS]
    for fmt, aware in fallbacks:
        missing = out.is_null() & s.is_not_null()
        if not missing.any():
            break
        todo = pl.select(pl.when(missing).then(s).otherwise(None)).to_series()
        if aware:
            parsed = todo.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
        else:
            parsed = todo.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone(
                "UTC"
            )
        out = out.fill_null(parsed)
    return out.alias(raw.name)


def parse_tags(raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(tags as List[String], ok mask). JSON array of strings, or ``a|b|c``; empty → []."""
    s = raw.str.strip_chars()
    is_json = s.str.starts_with("[")
    json_ok = s.str.contains(_JSON_STRING_ARRAY)
    candidates = pl.select(pl.when(is_json & json_ok).then(s).otherwise(None)).to_series()
    if candidates.str.contains(r"[\x00-\x1f]").any():
        # NDJSON tags arrive re-serialised by polars with control characters unescaped, which
        # its own JSON decoder then refuses: escape them again (rare, so only when present).
        for code in range(0x20):
            candidates = candidates.str.replace_all(chr(code), f"\\u{code:04x}", literal=True)
    try:
        decoded = candidates.str.json_decode(pl.List(pl.String))
    except pl.exceptions.ComputeError:
        # polars re-serialises NDJSON arrays without escaping backslashes, so a tag holding
        # one can make the column undecodable: decode value by value (rare) and reject those
        # that still fail, rather than failing the whole job.
        decoded = pl.Series([_json_tags(v) for v in candidates.to_list()], dtype=pl.List(pl.String))
    undecodable = candidates.is_not_null() & decoded.is_null()
    plain = (~is_json & (s != "")).fill_null(False)
    # ``a|b|c`` lists: only split when some row has one (NDJSON tags are JSON arrays).
    piped = (
        s.str.split("|")
        if plain.any()
        else pl.repeat(None, len(s), dtype=pl.List(pl.String), eager=True)
    )
    tags = pl.select(
        pl.when(s.is_null() | (s == ""))
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .when(is_json)
        .then(decoded)
        .otherwise(piped)
    ).to_series()
    has_empty = tags.list.eval(pl.element().str.strip_chars().str.len_bytes() == 0).list.any()
    # "\u0000" in a JSON array decodes to NUL, which a text[] cannot store.
    has_nul = tags.list.eval(pl.element().str.contains("\x00", literal=True)).list.any()
    ok = (
        ~(is_json & ~json_ok).fill_null(False)
        & ~undecodable
        & ~has_empty.fill_null(False)
        & ~has_nul.fill_null(False)
    )
    return tags.alias(raw.name), ok


def _json_tags(value: str | None) -> list[str] | None:
    if value is None:
        return None
    try:
        tags = json.loads(value)
    except ValueError:
        return None
    return tags if all(isinstance(t, str) for t in tags) else None


def _false(n: int) -> pl.Series:
    """All-False Boolean Series (typed: ``pl.Series([])`` would be Null, which ``~`` rejects)."""
    return pl.Series([False] * n, dtype=pl.Boolean)


def _has_nul(s: pl.Series) -> pl.Series:
    """NUL bytes pass every text rule but PostgreSQL text cannot store them (the whole batch's
    COPY would fail), so they are a format error of the record instead. Other kinds' checks
    already reject them."""
    return s.str.contains("\x00", literal=True)


def _json_types(
    col: Column, raw: pl.Series, code: pl.Series, records: RecordTypes, key: str
) -> pl.Series:
    """``code`` with a wrong-type code where the JSON value is not of the kind's JSON type (a
    value of the wrong type fails before any other rule). Only the values that may be of
    another type are looked up in their record."""
    expected = JSON_TYPES.get(col.kind, JsonType.STRING)
    present = raw.is_not_null().to_numpy()
    if expected is not JsonType.STRING:
        maybe = present
    elif col.kind in _STRICT:
        maybe = present & code.is_not_null().to_numpy()
    else:
        maybe = maybe_not_string(raw)
    rows = np.flatnonzero(maybe)
    if not len(rows):
        return code
    found = records.of(key, rows)
    wrong = (found != expected) & (found != JsonType.ABSENT)
    if not wrong.any():
        return code
    got = np.zeros(len(code), dtype=np.uint8)
    got[rows[wrong]] = found[wrong]
    wrong_code = pl.Series(got).replace_strict(
        {int(t): c for t, c in _WRONG_TYPE.items()}, default=None, return_dtype=pl.String
    )
    picked = pl.select(pl.when(wrong_code.is_not_null()).then(wrong_code).otherwise(code))
    return picked.to_series().alias(code.name)


def _check(col: Column, raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(error code or null per row, typed value) for one column."""
    textual = col.kind in (Kind.TEXT,)
    s = raw if textual else raw.str.strip_chars()
    missing = s.is_null() | (s.str.strip_chars() == "")
    s = pl.select(pl.when(missing).then(None).otherwise(s)).to_series().alias(col.name)
    bad_format: pl.Series
    bad_value = _false(len(s))
    typed: pl.Series = s
    match col.kind:
        case Kind.UUID:
            typed = s.str.to_lowercase()
            bad_format = ~checks.is_uuid(s)
        case Kind.COMMENT_ID:
            bad_format = ~(checks.is_uuid(s) | checks.is_token_id(s, "cm_", 64))
            typed = pl.select(
                pl.when(checks.is_uuid(s)).then(s.str.to_lowercase()).otherwise(s)
            ).to_series()
        case Kind.EMAIL:
            bad_format = ~checks.is_email(s)
        case Kind.SLUG:
            bad_format = ~checks.is_slug(s)
        case Kind.ENUM:
            typed = s.str.to_lowercase()
            bad_format = _false(len(s))
            bad_value = ~typed.is_in(list(col.choices))
        case Kind.BOOL:
            lowered = s.str.to_lowercase()
            bad_format = ~lowered.is_in(["true", "false"])
            typed = pl.select(
                pl.when(lowered.is_null()).then(pl.lit(col.default)).otherwise(lowered == "true")
            ).to_series()
        case Kind.TIMESTAMP:
            typed = parse_timestamps(s)
            bad_format = typed.is_null()
        case Kind.TAGS:
            typed, ok = parse_tags(s)
            bad_format = ~ok
            missing = _false(len(s))  # an empty tag list is a valid value
        case Kind.TEXT:
            typed = raw
            bad_format = _has_nul(s)
            if col.max_words:
                bad_value = checks.word_count(s) > col.max_words
    code_value = "too_long" if col.kind is Kind.TEXT else "invalid_value"
    present = ~missing
    code = pl.select(
        pl.when(missing & col.required)
        .then(pl.lit("required"))
        .when(present & bad_format.fill_null(False))
        .then(pl.lit("invalid_format"))
        .when(present & bad_value.fill_null(False))
        .then(pl.lit(code_value))
        .otherwise(pl.lit(None, dtype=pl.String))
    ).to_series()
    return code.alias(col.name), typed.alias(col.name)


def _errors_for(
    frame: pl.DataFrame, col: Column, code: pl.Series, msgs: dict[str, str]
) -> pl.DataFrame:
    picked = frame.select(ROW, LINE, pl.col(col.name).alias("value")).with_columns(code=code)
    picked = picked.filter(pl.col("code").is_not_null())
    if picked.is_empty():
        return empty_errors()
    return picked.select(
        pl.col(ROW).alias("row"),
        pl.col(LINE).alias("line"),
        pl.lit(col.name).alias("field"),
        pl.when(pl.col("code").str.starts_with("json:"))
        .then(pl.lit("invalid_format"))
        .otherwise(pl.col("code"))
        .alias("code"),
        pl.col("code").replace_strict(msgs, default="invalid").alias("message"),
        pl.col("value")
        .str.slice(0, MAX_VALUE_CHARS)
        .str.replace_all("\x00", NUL_SHOWN, literal=True),
    ).cast(ERROR_SCHEMA)  # type: ignore[arg-type]


def _deferred(resource: Resource, col: Column, present: pl.Series, code: pl.Series) -> pl.Series:
    """mode=merge: ``code`` without ``required`` where the record lacks the field altogether
    (a record that updates a row may omit it; the merge SQL requires it of new records). An
    ``id`` stays required when the resource has no other key to match by."""
    if not col.required or (col.name == "id" and resource.natural_key is None):
        return code
    bit = 1 << resource.column_names.index(col.name)
    absent = (present & bit) == 0
    return (
        pl.select(pl.when(absent & (code == "required")).then(None).otherwise(code))
        .to_series()
        .alias(code.name)
    )


def validate(
    frame: pl.DataFrame, resource: Resource, *, keys: Mapping[str, str] | None = None
) -> Validated:
    """Check every column of every record; return typed valid rows and error rows (row order).

    ``keys``: JSON input read through a mapping: the key each field was read from (its values'
    JSON types are looked up there). A :data:`PRESENT` column (mode=merge) says which fields
    each record holds: an absent required field is left to the merge (see :func:`_deferred`)."""
    codes: dict[str, pl.Series] = {}
    typed: dict[str, pl.Series] = {}
    records = None
    if RECORD in frame.columns:
        # Dropped at once: carried along, the view of the block made every select slower.
        records = RecordTypes(frame[RECORD])
        frame = frame.drop(RECORD)
    present = frame[PRESENT] if PRESENT in frame.columns else None
    for col in resource.columns:
        codes[col.name], typed[col.name] = _check(col, frame[col.name])
        if records is not None:
            key = col.name if keys is None else keys.get(col.name, col.name)
            codes[col.name] = _json_types(col, frame[col.name], codes[col.name], records, key)
        if present is not None:
            codes[col.name] = _deferred(resource, col, present, codes[col.name])
    msgs = {col.name: messages(col, json=records is not None) for col in resource.columns}
    if resource.rules:
        typed_frame = pl.DataFrame(list(typed.values()))
        for rule in resource.rules:
            violated = typed_frame.select(rule.violated.fill_null(False)).to_series()
            current = codes[rule.field]
            codes[rule.field] = pl.select(
                pl.when(current.is_null() & violated).then(pl.lit(rule.code)).otherwise(current)
            ).to_series()
            msgs[rule.field] = {**msgs[rule.field], rule.code: rule.message}
    error_frames = [
        _errors_for(frame, col, codes[col.name], msgs[col.name]) for col in resource.columns
    ]
    errors = pl.concat([e for e in error_frames if not e.is_empty()] or [empty_errors()])
    failed = pl.select(pl.any_horizontal([c.is_not_null() for c in codes.values()])).to_series()
    kept = [frame[ROW], frame[LINE]] + ([] if present is None else [present])
    valid = pl.DataFrame([*typed.values(), *kept]).filter(~failed)
    return Validated(valid, errors.sort("row", "field", nulls_last=True))
