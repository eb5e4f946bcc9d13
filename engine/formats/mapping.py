"""How a file's columns (CSV) or keys (NDJSON, JSON) become a resource's fields.

An import may name a ``mapping`` (``{"Email Address": "email"}``: file column → field) and a
``header_case`` (``exact``, the default, or ``insensitive``). The API checks both when the request
comes (:func:`parse_mapping`, :func:`parse_header_case`: a :class:`MappingError` names the bad
entry); the job stores them in its ``options``, and the worker builds a :class:`FieldMap` from them
for every attempt, so a resumed job reads the file as the first attempt did.

Rules (the README's "Column mapping"):

* a mapping source feeds only its target; a field no entry targets is read from the column (key)
  of its own name, unless that name is itself a mapping source;
* every other column or key is ignored and listed once in the job's ``warnings``;
* ``header_case=insensitive`` compares names with ASCII letters folded to lowercase (``Email``,
  ``EMAIL`` and ``email`` are one name); other characters compare exactly. In JSON input the keys
  of each record are folded before parsing, so keys differing only in case within one record are
  a repeated key: the first one wins, as for any repeated key.

Nothing here reads polars or numpy: the API imports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Values of ``header_case``; the first is the default.
HEADER_CASES = ("exact", "insensitive")
#: Longest mapping source (a column or key name), in characters.
MAX_SOURCE_CHARS = 256
#: Largest mapping as JSON text (form field or query parameter), in bytes.
MAX_MAPPING_BYTES = 16 * 1024
#: Bit set of the fields a record holds (``mode=merge``): a polars column of the parsed frames,
#: staged beside the record (bit ``i``: the resource's ``i``-th column).
PRESENT = "__present"
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


class MappingError(ValueError):
    """Raised when an import's ``mapping`` or ``header_case`` is not acceptable; the message
    names the bad entry (the API answers 400 with it)."""


def fold(name: str) -> str:
    """``name`` with ASCII letters lowercased (``header_case=insensitive``)."""
    return name.encode("utf-8").translate(_ASCII_LOWER).decode("utf-8")


def parse_header_case(raw: str | None) -> str:
    value = (raw or "").strip() or HEADER_CASES[0]
    if value not in HEADER_CASES:
        raise MappingError(f"header_case must be one of {', '.join(HEADER_CASES)}; got {raw!r}")
    return value


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MappingError(f"mapping: the source {key!r} appears twice")
        out[key] = value
    return out


def parse_mapping(
    raw: str | Mapping[str, Any] | None, fields: Sequence[str], header_case: str = "exact"
) -> dict[str, str]:
    """The checked mapping (source → field) from a request's JSON text or object; ``{}`` when
    absent or empty. ``fields``: the resource's fields."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        if len(raw.encode("utf-8")) > MAX_MAPPING_BYTES:
            raise MappingError(f"mapping is longer than {MAX_MAPPING_BYTES} bytes")
        try:
            data = json.loads(raw, object_pairs_hook=_no_repeats)
        except ValueError as exc:
            if isinstance(exc, MappingError):
                raise
            raise MappingError(
                'mapping must be a JSON object of file column → field, e.g. {"Email Address": '
                f'"email"}}: {exc}'
            ) from None
    else:
        data = raw
    if not isinstance(data, Mapping):
        raise MappingError(
            'mapping must be a JSON object of file column → field, e.g. {"Email Address": "email"}'
        )
    if len(data) > len(fields):
        raise MappingError(
            f"mapping has {len(data)} entries; the resource has {len(fields)} fields, "
            "and each takes at most one source"
        )
    out: dict[str, str] = {}
    targeted: dict[str, str] = {}
    folded: dict[str, str] = {}
    for source, target in data.items():
        entry = f"mapping entry {json.dumps(source, ensure_ascii=False)[:80]}"
        if not isinstance(target, str):
            raise MappingError(f"{entry}: the field must be a string; got {type(target).__name__}")
        if not source:
            raise MappingError("mapping: a source column name is empty")
        if len(source) > MAX_SOURCE_CHARS:
            raise MappingError(f"{entry}: a source is at most {MAX_SOURCE_CHARS} characters")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in source):
            raise MappingError(f"{entry}: a source must not hold control characters")
        if target not in fields:
            raise MappingError(
                f"{entry}: {target!r} is not a field of this resource (fields: {', '.join(fields)})"
            )
        if target in targeted:
            raise MappingError(
                f"mapping: {targeted[target]!r} and {source!r} both map to {target!r}; "
                "a field takes one source"
            )
        if header_case == "insensitive":
            key = fold(source)
            if key in folded:
                raise MappingError(
                    f"mapping: the sources {folded[key]!r} and {source!r} differ only in case "
                    "(header_case=insensitive)"
                )
            folded[key] = source
        targeted[target] = source
        out[source] = target
    return out


def canonical(mapping: Mapping[str, str]) -> str:
    """The mapping as stable text (for the idempotency hash)."""
    return json.dumps(dict(sorted(mapping.items())), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class FieldMap:
    """How one job's file becomes fields: ``fields`` (the resource's, in order), the checked
    ``mapping``, ``insensitive`` (``header_case``), and ``presence`` (``mode=merge``: each parsed
    frame gets a :data:`PRESENT` column)."""

    fields: tuple[str, ...]
    mapping: Mapping[str, str] = field(default_factory=dict)
    insensitive: bool = False
    presence: bool = False
    #: folded-if-insensitive name in the file → field
    _by_name: dict[str, str] = field(init=False, repr=False, compare=False)
    #: field → the name it is read from, as the mapping (or the field) spells it
    _source: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.fields) > 62:
            raise ValueError("a PRESENT bit set holds at most 62 fields")
        by_name = {self.key(s): t for s, t in self.mapping.items()}
        source = {t: s for s, t in self.mapping.items()}
        for name in self.fields:
            if name not in source and self.key(name) not in by_name:
                by_name[self.key(name)] = name
                source[name] = name
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_source", source)

    @classmethod
    def of(
        cls,
        fields: Sequence[str],
        options: Mapping[str, Any] | None,
        *,
        presence: bool = False,
    ) -> FieldMap:
        """From a job's stored ``options`` (checked by the API when it was created)."""
        opts = options or {}
        header_case = parse_header_case(opts.get("header_case"))
        mapping = parse_mapping(opts.get("mapping") or None, fields, header_case)
        insensitive = header_case == "insensitive"
        return cls(tuple(fields), mapping, insensitive, presence)

    @property
    def plain(self) -> bool:
        """Columns are fields by their own names: the reader does what it did before mappings."""
        return not self.mapping and not self.insensitive and not self.presence

    def key(self, name: str) -> str:
        """``name`` as compared (folded with ``header_case=insensitive``)."""
        return fold(name) if self.insensitive else name

    def field_of(self, name: str) -> str | None:
        """The field a column or key of the file feeds (None: ignored)."""
        return self._by_name.get(self.key(name))

    def source(self, name: str) -> str | None:
        """The column or key field ``name`` is read from, as the mapping spells it (None: no
        source, its own name being another field's source)."""
        return self._source.get(name)

    def json_keys(self) -> dict[str, str]:
        """field → the key to read in a JSON record, folded when insensitive (the parser folds
        the records' keys the same way)."""
        return {f: self.key(s) for f, s in self._source.items()}

    def shown(self) -> dict[str, str]:
        """field → the name error rows give it, where that is not the field's own: its mapping
        source as the mapping spells it (JSON input; CSV uses the header's spelling)."""
        return {f: s for f, s in self._source.items() if s != f}

    def expected(self, name: str) -> str:
        """How a message names the column a field is expected in."""
        source = self._source.get(name)
        if source is None:
            return f"{name} (its own name is mapped to {self.mapping.get(name)!r})"
        return name if source == name else f"{source!r} (→ {name})"

    def bits(self, names: Sequence[str]) -> int:
        """The :data:`PRESENT` bit set of ``names`` (fields)."""
        return sum(1 << self.fields.index(n) for n in set(names))
