#!/usr/bin/env python3
"""Deterministic generator of bulkio import files with planted, counted defects.

Standalone: Python stdlib + numpy only (never imports ``engine``). See ``testdata/README.md``.

    python testdata/generate.py --resource users --format csv --rows 10000 --seed 1 \\
        --out testdata/generated/users.csv

writes ``users.csv`` and ``users.csv.expected.json`` (the exact outcome a correct importer must
report when the file is imported into a database holding none of the generated keys).

Everything about record ``i`` (0-based) of a resource is a pure function of
``(seed, resource, i)`` (splitmix64 hashes), and the set of defective records is a pure function
of ``(seed, resource, rows, defect_rate)``. So the articles generator knows which users of the
users file of the same seed are valid (and their ids) without reading that file, and comments
know the valid articles and users. The format only changes how records are written (and, for
JSON arrays, which defect kind a defective record gets: no malformed records there), never
*which* records are valid.
"""

from __future__ import annotations

import argparse
import gzip as gzip_module
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from json.encoder import encode_basestring as _jenc  # type: ignore[attr-defined]
from typing import Any

import numpy as np

GENERATOR_VERSION = 1
RESOURCES = ("users", "articles", "comments")
FORMATS = ("csv", "ndjson", "json")
COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "email", "name", "role", "active", "created_at", "updated_at"),
    "articles": (
        "id",
        "slug",
        "title",
        "body",
        "author_id",
        "tags",
        "status",
        "published_at",
        "created_at",
    ),
    "comments": ("id", "article_id", "user_id", "body", "created_at"),
}
ROLES = ("admin", "author", "editor", "reader", "viewer")
#: valid_ids are embedded in the expected file up to this many valid records.
VALID_IDS_LIMIT = 100_000
CHUNK_ROWS = 20_000
GZIP_LEVEL = 1

# (kind, field, code): every defective record carries exactly one of these.
DEFECTS: dict[str, tuple[tuple[str, str | None, str], ...]] = {
    "users": (
        ("invalid_email", "email", "invalid_format"),
        ("duplicate_email", "email", "duplicate_in_file"),
        ("missing_id", "id", "required"),
        ("invalid_role", "role", "invalid_value"),
        ("missing_name", "name", "required"),
        ("invalid_created_at", "created_at", "invalid_format"),
        ("invalid_active", "active", "invalid_format"),
        ("duplicate_id", "id", "duplicate_in_file"),
        ("malformed", None, "malformed_record"),
    ),
    "articles": (
        ("invalid_slug", "slug", "invalid_format"),
        ("duplicate_slug", "slug", "duplicate_in_file"),
        ("unknown_author", "author_id", "foreign_key"),
        ("draft_with_published_at", "published_at", "invalid_value"),
        ("invalid_status", "status", "invalid_value"),
        ("missing_title", "title", "required"),
        ("invalid_id", "id", "invalid_format"),
        ("malformed", None, "malformed_record"),
    ),
    "comments": (
        ("unknown_article", "article_id", "foreign_key"),
        ("unknown_user", "user_id", "foreign_key"),
        ("body_too_long", "body", "too_long"),
        ("empty_body", "body", "required"),
        ("missing_body", "body", "required"),
        ("malformed", None, "malformed_record"),
    ),
}
#: Kinds that copy a key of an earlier valid record (need a reference).
_DUP_KINDS = {"duplicate_email", "duplicate_id", "duplicate_slug"}


class _Missing:
    """Sentinel: the key is absent (JSON) / the cell is empty and unquoted (CSV)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# ------------------------------------------------------------------------------------ hashing

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
#: Hash streams: one per resource, plus "ghost" streams for ids that never exist.
STREAMS = {"users": 1, "articles": 2, "comments": 3, "ghost_users": 4, "ghost_articles": 5}
# Channels (independent hash families per stream).
_CH_ID1, _CH_ID2, _CH_PLAN, _CH_KIND, _CH_REF = 0, 1, 2, 3, 4
_CH_A, _CH_B, _CH_C, _CH_D, _CH_E, _CH_F = 10, 11, 12, 13, 14, 15


def _mix(z: int) -> int:
    """splitmix64 finaliser (a bijection of 64-bit integers)."""
    z &= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _base(seed: int, stream: int, channel: int) -> int:
    return _mix(_mix(_mix(seed & _M64) ^ (stream * 0x100000001B3)) + channel * _GOLDEN)


def _mix_np(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash64(seed: int, stream: int, channel: int, idx: np.ndarray) -> np.ndarray:
    """``mix(base(seed, stream, channel) + i * GOLDEN)`` for every i: a bijection of i."""
    idx = np.asarray(idx, dtype=np.int64).astype(np.uint64)
    return _mix_np(np.uint64(_base(seed, stream, channel)) + idx * np.uint64(_GOLDEN))


def _hash_scalar(seed: int, stream: int, channel: int, i: int) -> int:
    return _mix(_base(seed, stream, channel) + i * _GOLDEN)


# ----------------------------------------------------------------------------------- ids

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS16 = np.arange(60, -4, -4, dtype=np.uint64)  # 16 nibbles, most significant first
_UUID_HI_POS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17])
_UUID_LO_POS = np.array([19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35])


def _uuid_halves(h1: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.uint64
    hi = (
        ((h2 >> u(16)) << u(16))  # groups 1-2: top 48 bits of h2
        | u(0x4000)  # version 4
        | ((h2 & u(0x3FF)) << u(2))
        | (h1 >> u(62))
    )
    lo = (u(0x8000) | ((h1 >> u(48)) & u(0x3FFF))) << u(48) | (h1 & u(0xFFFFFFFFFFFF))
    return hi, lo


def _uuid_strings(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    n = len(hi)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, _UUID_HI_POS] = _HEX[
        ((hi[:, None] >> _SHIFTS16[None, :]) & np.uint64(15)).astype(np.intp)
    ]
    out[:, _UUID_LO_POS] = _HEX[
        ((lo[:, None] >> _SHIFTS16[None, :]) & np.uint64(15)).astype(np.intp)
    ]
    return out.view("S36").ravel().astype("U36").tolist()


def uuids(stream: str, seed: int, idx: np.ndarray | Sequence[int]) -> list[str]:
    """UUIDv4-shaped ids of records ``idx`` of a hash stream (see README "Id derivation")."""
    idx = np.asarray(idx, dtype=np.int64)
    s = STREAMS[stream]
    h1 = hash64(seed, s, _CH_ID1, idx)
    h2 = hash64(seed, s, _CH_ID2, idx)
    return _uuid_strings(*_uuid_halves(h1, h2))


def record_uuid(stream: str, seed: int, index: int) -> str:
    """Scalar reference implementation of :func:`uuids` (pure Python)."""
    s = STREAMS[stream]
    h1 = _hash_scalar(seed, s, _CH_ID1, index)
    h2 = _hash_scalar(seed, s, _CH_ID2, index)
    hi = ((h2 >> 16) << 16) | 0x4000 | ((h2 & 0x3FF) << 2) | (h1 >> 62)
    lo = ((0x8000 | ((h1 >> 48) & 0x3FFF)) << 48) | (h1 & 0xFFFFFFFFFFFF)
    x = f"{hi:016x}{lo:016x}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", np.uint8)
_SHIFTS11 = np.arange(60, -6, -6, dtype=np.uint64)  # 11 six-bit digits (the first has 4 bits)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _b64_11(h: np.ndarray) -> list[str]:
    digits = ((h[:, None] >> _SHIFTS11[None, :]) & np.uint64(63)).astype(np.intp)
    return _B64[digits].view("S11").ravel().astype("U11").tolist()


def _b62(i: int) -> str:
    out = ""
    while True:
        i, r = divmod(i, 62)
        out = _B62[r] + out
        if not i:
            return out


def comment_ids(seed: int, idx: np.ndarray | Sequence[int]) -> list[str]:
    """Comment ids: ~50 % UUIDs, the rest ``cm_`` ids (11 chars, 64 chars, or short base62)."""
    idx = np.asarray(idx, dtype=np.int64)
    s = STREAMS["comments"]
    h1 = hash64(seed, s, _CH_ID1, idx)
    h2 = hash64(seed, s, _CH_ID2, idx)
    u = _uuid_strings(*_uuid_halves(h1, h2))
    b = _b64_11(h1)
    variant = (h2 % np.uint64(100)).tolist()
    out: list[str] = []
    for k, v in enumerate(variant):
        if v < 50:
            out.append(u[k])
        elif v < 95:
            out.append("cm_" + b[k])  # 11 chars: a bijection of h1, hence of i
        elif v < 98:
            # 64 chars (the maximum): the 11-char body, then filler from the uuid
            out.append("cm_" + b[k] + "_" + (u[k].replace("-", "") * 2)[:52])
        else:  # short: base62(i) "-" base62(seed % 62**2), unique as "-" is not a digit
            out.append("cm_" + _b62(int(idx[k])) + "-" + _b62(seed % 3844))
    return out


def ids_for(resource: str, seed: int, idx: np.ndarray | Sequence[int]) -> list[str]:
    """The ``id`` that record ``idx`` of ``resource`` has when valid."""
    if resource == "comments":
        return comment_ids(seed, idx)
    return uuids(resource, seed, idx)


# ------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Parent:
    """The file a reference points into: its seed, rows and defect rate."""

    seed: int
    rows: int
    defect_rate: float


def defect_count(rows: int, defect_rate: float) -> int:
    if rows < 2 or defect_rate <= 0:
        return 0
    return min(rows - 1, round(rows * defect_rate))


@lru_cache(maxsize=16)
def _defective(resource: str, seed: int, rows: int, defect_rate: float) -> np.ndarray:
    """Sorted indexes of the defective records (record 0 is always valid)."""
    n_def = defect_count(rows, defect_rate)
    if n_def == 0:
        return np.zeros(0, dtype=np.int64)
    cand = np.arange(1, rows, dtype=np.int64)
    h = hash64(seed, STREAMS[resource], _CH_PLAN, cand)
    sel = np.argpartition(h, n_def - 1)[:n_def] if n_def < len(cand) else np.arange(len(cand))
    out = np.sort(cand[sel])
    out.setflags(write=False)
    return out


@lru_cache(maxsize=16)
def valid_indexes(resource: str, seed: int, rows: int, defect_rate: float) -> np.ndarray:
    """Sorted 0-based indexes of the records that import successfully."""
    mask = np.ones(rows, dtype=bool)
    mask[_defective(resource, seed, rows, defect_rate)] = False
    out = np.flatnonzero(mask).astype(np.int64)
    out.setflags(write=False)
    return out


def valid_ids(resource: str, seed: int, rows: int, defect_rate: float) -> list[str]:
    """Ids of the valid records of a generated file, in file order."""
    return ids_for(resource, seed, valid_indexes(resource, seed, rows, defect_rate))


@dataclass
class _Plan:
    resource: str
    seed: int
    rows: int
    kinds: tuple[tuple[str, str | None, str], ...]
    kind: np.ndarray  # int8 per record: -1 valid, else index into kinds
    ref: dict[int, int]  # defective index -> referenced earlier valid index (dup kinds)
    valid: np.ndarray


def _plan(resource: str, seed: int, rows: int, defect_rate: float, fmt: str) -> _Plan:
    kinds = DEFECTS[resource]
    if fmt == "json":  # a malformed element cannot be isolated inside a JSON array
        kinds = tuple(k for k in kinds if k[0] != "malformed")
    defective = _defective(resource, seed, rows, defect_rate)
    valid = valid_indexes(resource, seed, rows, defect_rate)
    kind = np.full(rows, -1, dtype=np.int8)
    ref: dict[int, int] = {}
    if len(defective):
        s = STREAMS[resource]
        order = np.argsort(hash64(seed, s, _CH_KIND, defective), kind="stable")
        assigned = np.empty(len(defective), dtype=np.int8)
        assigned[order] = np.arange(len(defective)) % len(kinds)
        kind[defective] = assigned
        dup = np.array([kinds[k][0] in _DUP_KINDS for k in range(len(kinds))])
        dup_rows = defective[dup[assigned]]
        if len(dup_rows):
            earlier = np.searchsorted(valid, dup_rows)  # >= 1: record 0 is valid
            pick = hash64(seed, s, _CH_REF, dup_rows) % earlier.astype(np.uint64)
            refs = valid[pick.astype(np.int64)]
            ref = dict(zip(dup_rows.tolist(), refs.tolist(), strict=True))
    return _Plan(resource, seed, rows, kinds, kind, ref, valid)


# ---------------------------------------------------------------------------------- content

# fmt: off
_FIRST = (
    ("Anna", "anna"), ("José", "jose"), ("Zoë", "zoe"), ("François", "francois"),
    ("Łukasz", "lukasz"), ("Søren", "soren"), ("Mårten", "marten"), ("Ngozi", "ngozi"),
    ("Aiko", "aiko"), ("李", "li"), ("王小明", "xiaoming"), ("Андрей", "andrey"),
    ("Ольга", "olga"), ("محمد", "mohammed"), ("Nguyễn", "nguyen"), ("Siobhán", "siobhan"),
    ("Björk", "bjork"), ("Renée", "renee"), ("Jürgen", "jurgen"), ("Ana María", "anamaria"),
    ("Émilie", "emilie"), ("Kwame", "kwame"), ("Priya", "priya"), ("Chloé", "chloe"),
    ("D'Arcy", "darcy"), ("John", "john"), ("Mary", "mary"), ("Wei", "wei"), ("Yuki", "yuki"),
    ("Omar", "omar"), ("Ιωάννης", "ioannis"), ("Dagný", "dagny"),
)
_LAST = (
    ("Smith", "smith"), ("García", "garcia"), ("Müller", "muller"), ("O'Brien", "obrien"),
    ("Núñez", "nunez"), ("Dvořák", "dvorak"), ("Kowalski", "kowalski"), ("张", "zhang"),
    ("田中", "tanaka"), ("Иванов", "ivanov"), ("Ben-David", "bendavid"),
    ("van der Berg", "vanderberg"), ("Østergaard", "ostergaard"), ("Okafor", "okafor"),
    ("Patel", "patel"), ("Lefèvre", "lefevre"), ("Çelik", "celik"), ("Nakamura", "nakamura"),
    ("Johnson", "johnson"), ("Kim", "kim"), ("Brown", "brown"), ("Silva", "silva"),
    ("Jones", "jones"), ("Rossi", "rossi"),
)
_EMOJI = ("🎉", "🚀", "😀", "🌍", "☕", "👩‍💻", "🦀")
_NICK = ("Ace", "The Rock", "Bo", "Doc", "Ziggy")
_DOMAINS = ("example.com", "example.org", "mail.example.net", "example.co.uk", "corp.example.io")
_TAG_WORDS = ("news", "work", "dev", "list")
_BAD_EMAILS = ("user{i}.example.com", "user{i}@", "@example{i}.com", "user {i}@example.com",
               "user{i}@@example.com")
_BAD_ROLES = ("superuser", "owner", "guest", "root", "moderator")
_BAD_TIMES = ("2024-13-45", "yesterday", "2024-02-30T10:00:00Z", "03/01/2024 10:00",
              "2024-03-01T25:61:00Z", "not a date")
_BAD_ACTIVE = ("maybe", "nope", "tru", "2")
_BAD_STATUS = ("archived", "deleted", "pending", "scheduled")
_BAD_SLUGS = ("Hello World {i}!", "UPPER-Case-{i}", "trailing-dash-{i}-", "double--dash-{i}",
              "-leading-{i}", "snake_case_{i}", "ünïcode-{i}")
_SLUG_WORDS = ("getting", "started", "postgres", "bulk", "import", "csv", "json", "tips",
               "notes", "deep", "dive", "rust", "python", "data", "stream", "cafe", "why",
               "guide", "fast", "schema")
_TITLE_A = ("Getting started with", "Why I love", "10 tips for", "Notes on", "Understanding",
            "A deep dive into", "Lessons from", "Café culture and", "Über", "Debugging",
            "中文 notes:", "Ten years of")
_TITLE_B = ("PostgreSQL", "bulk imports", "中文 typography", "the café", "emoji 🚀 in URLs",
            "CSV, JSON and NDJSON", '"quoted" strings', "naïve résumé parsing", "Rust + Python",
            "streaming data", "Ελληνικά", "big files")
_TAGS = ("python", "rust", "postgres", "data science", "café", "日本", "csv", "json", "tips",
         "howto", "news", "c++", "🚀", "ops", "bench", "sql", "guide", "naïve", "web", "api",
         "release", "meta", "misc")  # 23 (prime): a stride walk yields distinct tags
_LOREM_TEXT = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate "
    "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident "
    "sunt culpa qui officia deserunt mollit anim id est laborum data import export postgres "
    "batch stream record column table index query schema"
)
_LOREM = tuple(_LOREM_TEXT.split())
_WORDS_EXTRA = ("café", "naïve", "résumé", "über", "straße", "中文", "日本語", "한국어",
                "Ελληνικά", "русский", "🚀", "😀", "½", "\"quoted\"", "it's", "e-mail")
_PUNCT = ("",) * 40 + (",", ",", ",", ".", ".", ".", "!", "?", ";", ":")

_TS_BASE = 1577836800  # 2020-01-01T00:00:00Z
_TS_SPAN = 5 * 365 * 86400
_OFFSETS = (("+02:00", 120), ("-05:00", -300), ("+05:30", 330), ("+00:00", 0),
            ("-03:30", -210), ("+09:00", 540))
# fmt: on


@dataclass(frozen=True)
class _Corpus:
    text: str
    starts: np.ndarray  # word start offsets
    ends: np.ndarray  # word end offsets (exclusive)


@lru_cache(maxsize=4)
def _corpus(n_words: int, ascii_only: bool) -> _Corpus:
    """A fixed text (independent of seed): words, punctuation, unicode, paragraph breaks."""
    h = hash64(0xC0FFEE, 99, 1 if ascii_only else 0, np.arange(n_words)).tolist()
    parts: list[str] = []
    starts = np.empty(n_words, dtype=np.int64)
    ends = np.empty(n_words, dtype=np.int64)
    pos = 0
    next_break = 40
    for k, x in enumerate(h):
        if ascii_only:
            w = _LOREM[x % len(_LOREM)]
            sep = " "
        else:
            r = x % 100
            w = (
                _WORDS_EXTRA[(x >> 8) % len(_WORDS_EXTRA)]
                if r < 6
                else _LOREM[(x >> 8) % len(_LOREM)]
            )
            if (x >> 20) % 10 == 0:
                w = w[:1].upper() + w[1:]
            w += _PUNCT[(x >> 24) % len(_PUNCT)]
            if k == next_break:
                sep = "\n\n"
                next_break = k + 30 + (x >> 32) % 90
            else:
                sep = " "
        starts[k] = pos
        ends[k] = pos + len(w)
        parts.append(w)
        parts.append(sep)
        pos += len(w) + len(sep)
    return _Corpus("".join(parts), starts, ends)


def _timestamps(secs: np.ndarray, style_hash: np.ndarray) -> list[str]:
    """ISO-8601 strings for UTC ``secs``: Z, .mmmZ, .uuuuuu+HH:MM, +HH:MM, +00:00."""
    style = (style_hash % np.uint64(100)).astype(np.int64)
    off_i = ((style_hash >> np.uint64(8)) % np.uint64(len(_OFFSETS))).astype(np.int64)
    frac = ((style_hash >> np.uint64(16)) % np.uint64(1_000_000)).astype(np.int64)
    with_off = (style >= 65) & (style < 90)
    off_min = np.array([m for _, m in _OFFSETS], dtype=np.int64)[off_i]
    local = secs + np.where(with_off, off_min * 60, 0)
    text = np.datetime_as_string(local.astype("datetime64[s]"), unit="s").tolist()
    out: list[str] = []
    offs = [o for o, _ in _OFFSETS]
    for t, st, oi, fr in zip(text, style.tolist(), off_i.tolist(), frac.tolist(), strict=True):
        if st < 45:
            out.append(t + "Z")
        elif st < 65:
            out.append(f"{t}.{fr // 1000:03d}Z")
        elif st < 75:
            out.append(f"{t}.{fr:06d}{offs[oi]}")
        elif st < 90:
            out.append(t + offs[oi])
        else:
            out.append(t + "+00:00")
    return out


def _empty(fmt: str, bits: int) -> Any:
    """A missing required value as the format can express it."""
    if fmt == "csv":
        return ("", MISSING)[bits % 2]  # quoted "" or a bare empty cell
    return (MISSING, None, "")[bits % 3]  # absent key, null, or ""


# ------------------------------------------------------------------------------ builders
# A builder returns the columns (lists of values) of records [start, end). Values are str, or
# MISSING / None / bool / list. ``fmt`` is "csv", "ndjson"/"json" or "plain" (typed values,
# valid records only are kept by the caller, defects are not applied).


@dataclass
class _Ctx:
    resource: str
    fmt: str
    seed: int
    rows: int
    body_chars: int
    plan: _Plan
    users: Parent
    articles: Parent

    @property
    def fam(self) -> str:
        return "json" if self.fmt in ("ndjson", "json") else self.fmt


def _users_names_emails(seed: int, idx: np.ndarray) -> tuple[list[str], list[str]]:
    h = hash64(seed, STREAMS["users"], _CH_A, idx).tolist()
    names: list[str] = []
    emails: list[str] = []
    nf, nl = len(_FIRST), len(_LAST)
    for i, x in zip(idx.tolist(), h, strict=True):
        first, fa = _FIRST[x % nf]
        last, la = _LAST[(x >> 8) % nl]
        v = (x >> 16) % 1000
        if v < 40:
            name = f"{last}, {first}"
        elif v < 70:
            name = f'{first} "{_NICK[(x >> 26) % len(_NICK)]}" {last}'
        elif v < 100:
            name = f"{first} {last} {_EMOJI[(x >> 26) % len(_EMOJI)]}"
        elif v < 115:
            name = f"{first}\n{last}"
        elif v < 120:
            name = f'{last}, "{_NICK[(x >> 26) % len(_NICK)]}"\n{first}'
        else:
            name = f"{first} {last}"
        names.append(name)
        dom = _DOMAINS[(x >> 32) % len(_DOMAINS)]
        e = (x >> 40) % 100
        # The index right before "@" (after the last ".") makes every email unique, in any case.
        if e < 10:
            emails.append(f"{fa.capitalize()}.{la.capitalize()}.{i}@{dom.capitalize()}")
        elif e < 15:
            emails.append(f"{fa}.{la}+{_TAG_WORDS[(x >> 48) % 4]}.{i}@{dom}")
        elif e < 20:
            emails.append(f"{fa}_{la}.{i}@{dom}")
        else:
            emails.append(f"{fa}.{la}.{i}@{dom}")
    return names, emails


_ROLE_BY_PCT = ["admin"] * 5 + ["author"] * 20 + ["editor"] * 10 + ["reader"] * 50 + ["viewer"] * 15
# ``active`` by (hash % 100): the same value in every format; empty means true.
_ACTIVE_CSV: list[Any] = (
    ["true"] * 45
    + ["false"] * 20
    + ["TRUE"] * 10
    + ["False"] * 10
    + [""] * 5  # a quoted empty cell
    + [MISSING] * 5  # a bare empty cell
    + ["FALSE"] * 5
)
_ACTIVE_TYPED = [not (isinstance(v, str) and v.lower() == "false") for v in _ACTIVE_CSV]
_ACTIVE_JSON: list[Any] = [
    (MISSING if v == "" else None) if v in ("", MISSING) else t  # absent key / null
    for v, t in zip(_ACTIVE_CSV, _ACTIVE_TYPED, strict=True)
]


def _users(ctx: _Ctx, idx: np.ndarray) -> list[list[Any]]:
    seed, s, fam = ctx.seed, STREAMS["users"], ctx.fam
    ids = uuids("users", seed, idx)
    names, emails = _users_names_emails(seed, idx)
    hb = hash64(seed, s, _CH_B, idx)
    roles = [_ROLE_BY_PCT[x] for x in (hb % np.uint64(100)).tolist()]
    a = ((hb >> np.uint64(8)) % np.uint64(100)).tolist()
    table = {"csv": _ACTIVE_CSV, "json": _ACTIVE_JSON, "plain": _ACTIVE_TYPED}[fam]
    active = [table[x] for x in a]
    hc = hash64(seed, s, _CH_C, idx)
    created_s = _TS_BASE + (hc % np.uint64(_TS_SPAN)).astype(np.int64)
    created = _timestamps(created_s, hash64(seed, s, _CH_D, idx))
    hu = hash64(seed, s, _CH_E, idx)
    upd_s = created_s + (hu % np.uint64(400 * 86400)).astype(np.int64)
    updated: list[Any] = _timestamps(upd_s, hu >> np.uint64(20))
    absent = ((hb >> np.uint64(16)) % np.uint64(100)).tolist()
    none_value = {"csv": MISSING, "json": None, "plain": None}[fam]
    for k, x in enumerate(absent):
        if x < 30:
            updated[k] = MISSING if (fam == "json" and x < 15) else none_value
    cols = [ids, emails, names, roles, active, created, updated]
    if fam != "plain":
        _users_defects(ctx, idx, cols)
    return cols


def _defects_in(ctx: _Ctx, idx: np.ndarray) -> list[tuple[int, int, str, int]]:
    """(position in chunk, record index, kind name, hash bits) of the chunk's defective records."""
    kinds = ctx.plan.kind[idx[0] : idx[-1] + 1] if len(idx) else ctx.plan.kind[:0]
    pos = np.flatnonzero(kinds >= 0)
    if not len(pos):
        return []
    rec = idx[pos]
    bits = hash64(ctx.seed, STREAMS[ctx.resource], _CH_F, rec).tolist()
    names = [ctx.plan.kinds[k][0] for k in kinds[pos].tolist()]
    return list(zip(pos.tolist(), rec.tolist(), names, bits, strict=True))


def _users_defects(ctx: _Ctx, idx: np.ndarray, cols: list[list[Any]]) -> None:
    ids, emails, names, roles, active, created, _ = cols
    for p, i, kind, bits in _defects_in(ctx, idx):
        if kind == "invalid_email":
            emails[p] = _BAD_EMAILS[bits % len(_BAD_EMAILS)].format(i=i)
        elif kind == "duplicate_email":
            j = ctx.plan.ref[i]
            e = _users_names_emails(ctx.seed, np.array([j]))[1][0]
            emails[p] = (e, e.upper(), e.title(), e.lower())[bits % 4]
        elif kind == "missing_id":
            ids[p] = _empty(ctx.fam, bits >> 8)
        elif kind == "invalid_role":
            roles[p] = _BAD_ROLES[bits % len(_BAD_ROLES)]
        elif kind == "missing_name":
            names[p] = _empty(ctx.fam, bits >> 8)
        elif kind == "invalid_created_at":
            created[p] = _BAD_TIMES[bits % len(_BAD_TIMES)]
        elif kind == "invalid_active":
            active[p] = _BAD_ACTIVE[bits % len(_BAD_ACTIVE)]
        elif kind == "duplicate_id":
            ids[p] = uuids("users", ctx.seed, [ctx.plan.ref[i]])[0]
        # malformed: applied when the record is written


def _slugs(seed: int, idx: np.ndarray) -> list[str]:
    h = hash64(seed, STREAMS["articles"], _CH_A, idx).tolist()
    nw = len(_SLUG_WORDS)
    out = []
    for i, x in zip(idx.tolist(), h, strict=True):
        k = 2 + x % 3
        words = [_SLUG_WORDS[(x >> (8 + 5 * t)) % nw] for t in range(k)]
        out.append("-".join(words) + "-" + str(i))  # the index segment makes slugs unique
    return out


def _pg_array(tags: list[str]) -> str:
    return (
        "{" + ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in tags) + "}"
    )


def _articles(ctx: _Ctx, idx: np.ndarray) -> list[list[Any]]:
    seed, s, fam = ctx.seed, STREAMS["articles"], ctx.fam
    n = len(idx)
    ids = uuids("articles", seed, idx)
    slugs = _slugs(seed, idx)
    hb = hash64(seed, s, _CH_B, idx)
    hbl = hb.tolist()
    ta, tb = len(_TITLE_A), len(_TITLE_B)
    titles = []
    for x in hbl:
        t = f"{_TITLE_A[x % ta]} {_TITLE_B[(x >> 8) % tb]}"
        v = (x >> 16) % 20
        if v == 0:
            t += f", part {(x >> 24) % 9 + 1}"
        elif v == 1:
            t = f'"{t}" revisited'
        titles.append(t)
    # bodies: a slice of about body_chars characters of the corpus
    bc = max(1, ctx.body_chars)
    corpus = _corpus(max(60_000, bc // 2), False)
    hc = hash64(seed, s, _CH_C, idx)
    lens = bc * 4 // 5 + (hc % np.uint64(bc * 2 // 5 + 1)).astype(np.int64)
    limit = int(np.searchsorted(corpus.starts, len(corpus.text) - int(lens.max()) - 1))
    w = ((hc >> np.uint64(24)) % np.uint64(max(1, limit))).astype(np.int64)
    st = corpus.starts[w].tolist()
    text = corpus.text
    bodies = [text[a : a + ln].rstrip() for a, ln in zip(st, lens.tolist(), strict=True)]
    # authors: valid users of the parent users file
    u = ctx.users
    uv = valid_indexes("users", u.seed, u.rows, u.defect_rate)
    hd = hash64(seed, s, _CH_D, idx)
    authors = uuids("users", u.seed, uv[(hd % np.uint64(len(uv))).astype(np.int64)])
    # tags
    nt = len(_TAGS)
    tags: list[Any] = []
    for x in (hd >> np.uint64(20)).tolist():
        r = x % 100
        k = 0 if r < 15 else 1 + (x >> 8) % 4
        start, step = (x >> 12) % nt, 1 + (x >> 20) % (nt - 1)
        tl = [_TAGS[(start + t * step) % nt] for t in range(k)]
        if fam == "csv":
            if k and (x >> 28) % 2:
                tags.append("|".join(tl))
            else:
                tags.append("[" + ",".join(map(_jenc, tl)) + "]")
        else:
            tags.append(tl)
    # status, timestamps
    he = hash64(seed, s, _CH_E, idx)
    created_s = _TS_BASE + (he % np.uint64(_TS_SPAN)).astype(np.int64)
    created = _timestamps(created_s, hash64(seed, s, _CH_F + 1, idx))
    pub_s = created_s + ((he >> np.uint64(32)) % np.uint64(30 * 86400)).astype(np.int64)
    published: list[Any] = _timestamps(pub_s, he >> np.uint64(12))
    draft = ((hb >> np.uint64(32)) % np.uint64(100) < np.uint64(30)).tolist()
    status = ["published"] * n
    none_value = {"csv": MISSING, "json": None, "plain": None}[fam]
    for k, d in enumerate(draft):
        if d:
            status[k] = "draft"
            published[k] = MISSING if (fam == "json" and hbl[k] >> 62) else none_value
    cols = [ids, slugs, titles, bodies, authors, tags, status, published, created]
    if fam != "plain":
        _articles_defects(ctx, idx, cols, pub_s)
    return cols


def _articles_defects(ctx: _Ctx, idx: np.ndarray, cols: list[list[Any]], pub_s: np.ndarray) -> None:
    ids, slugs, titles, _, authors, _, status, published, _ = cols
    for p, i, kind, bits in _defects_in(ctx, idx):
        if kind == "invalid_slug":
            slugs[p] = _BAD_SLUGS[bits % len(_BAD_SLUGS)].format(i=i)
        elif kind == "duplicate_slug":
            slugs[p] = _slugs(ctx.seed, np.array([ctx.plan.ref[i]]))[0]
        elif kind == "unknown_author":
            authors[p] = uuids("ghost_users", ctx.seed, [i])[0]
        elif kind == "draft_with_published_at":
            status[p] = "draft"
            published[p] = _timestamps(pub_s[p : p + 1], np.array([bits], dtype=np.uint64))[0]
        elif kind == "invalid_status":
            status[p] = _BAD_STATUS[bits % len(_BAD_STATUS)]
            published[p] = MISSING if ctx.fam == "csv" or (bits >> 8) % 2 else None
        elif kind == "missing_title":
            titles[p] = _empty(ctx.fam, bits >> 8)
        elif kind == "invalid_id":
            v = (bits >> 8) % 4
            u = ids[p]
            ids[p] = (f"not-a-uuid-{i}", u[:-1], str(1000 + i), "g" + u[1:])[v]


def _ascii_words(h: int, k: int) -> str:
    c = _corpus(20_000, True)
    w = h % (len(c.starts) - k)
    return c.text[c.starts[w] : c.ends[w + k - 1]]


def _comments(ctx: _Ctx, idx: np.ndarray) -> list[list[Any]]:
    seed, s = ctx.seed, STREAMS["comments"]
    ids = comment_ids(seed, idx)
    a, u = ctx.articles, ctx.users
    av = valid_indexes("articles", a.seed, a.rows, a.defect_rate)
    uv = valid_indexes("users", u.seed, u.rows, u.defect_rate)
    hb = hash64(seed, s, _CH_B, idx)
    article_ids = uuids("articles", a.seed, av[(hb % np.uint64(len(av))).astype(np.int64)])
    user_ids = uuids(
        "users", u.seed, uv[((hb >> np.uint64(32)) % np.uint64(len(uv))).astype(np.int64)]
    )
    corpus = _corpus(60_000, False)
    text, cs, ce = corpus.text, corpus.starts, corpus.ends
    nwords = len(cs)
    bodies = []
    for x in hash64(seed, s, _CH_C, idx).tolist():
        r = x % 1000
        if r < 3:
            bodies.append(_ascii_words(x >> 16, 500))  # exactly at the limit: valid
        elif r < 5:
            bodies.append(_ascii_words(x >> 16, 400 + (x >> 40) % 100))
        else:
            k = 1 + (x >> 10) % 30 if r < 800 else 30 + (x >> 10) % 90
            w = (x >> 20) % (nwords - k)
            bodies.append(text[cs[w] : ce[w + k - 1]])
    created_s = _TS_BASE + (hash64(seed, s, _CH_D, idx) % np.uint64(_TS_SPAN)).astype(np.int64)
    created = _timestamps(created_s, hash64(seed, s, _CH_E, idx))
    cols = [ids, article_ids, user_ids, bodies, created]
    if ctx.fam != "plain":
        for p, i, kind, bits in _defects_in(ctx, idx):
            if kind == "unknown_article":
                article_ids[p] = uuids("ghost_articles", seed, [i])[0]
            elif kind == "unknown_user":
                user_ids[p] = uuids("ghost_users", seed, [i])[0]
            elif kind == "body_too_long":
                bodies[p] = _ascii_words(bits >> 8, 501 + bits % 60)
            elif kind == "empty_body":
                bodies[p] = ""
            elif kind == "missing_body":
                bodies[p] = MISSING
    return cols


_BUILDERS = {"users": _users, "articles": _articles, "comments": _comments}

# ------------------------------------------------------------------------------ encoding


def _csv_cells(vals: list[Any]) -> list[str]:
    """RFC 4180 cells; also the PostgreSQL COPY CSV dialect (bare empty = NULL)."""
    out: list[str] = []
    ap = out.append
    for v in vals:
        if v.__class__ is str:
            if v and '"' not in v and "," not in v and "\n" not in v and "\r" not in v:
                ap(v)
            else:
                ap('"' + v.replace('"', '""') + '"')
        elif v.__class__ is bool:
            ap("true" if v else "false")
        elif v.__class__ is list:
            ap('"' + _pg_array(v).replace('"', '""') + '"')
        else:  # None / MISSING
            ap("")
    return out


def _json_cells(key: str, vals: list[Any]) -> list[str | None]:
    pre = '"' + key + '":'
    if all(v.__class__ is str for v in vals):  # fast path: no defect, no optional value here
        return [pre + x for x in map(_jenc, vals)]
    out: list[str | None] = []
    ap = out.append
    for v in vals:
        c = v.__class__
        if c is str:
            ap(pre + _jenc(v))
        elif c is bool:
            ap(pre + ("true" if v else "false"))
        elif c is list:
            ap(pre + "[" + ",".join(map(_jenc, v)) + "]")
        elif v is None:
            ap(pre + "null")
        else:  # MISSING: key omitted
            ap(None)
    return out


def _encode(ctx: _Ctx, idx: np.ndarray, cols: list[list[Any]]) -> list[str]:
    """Records of one chunk as text (without the trailing newline), malformed ones planted."""
    names = COLUMNS[ctx.resource]
    enc: list[list[Any]]
    if ctx.fam == "json":
        enc = [_json_cells(k, c) for k, c in zip(names, cols, strict=True)]
        recs = ["{" + ",".join(filter(None, t)) + "}" for t in zip(*enc, strict=True)]
    else:
        enc = [_csv_cells(c) for c in cols]
        recs = list(map(",".join, zip(*enc, strict=True)))
    if ctx.fam == "plain":
        return recs
    for p, i, kind, bits in _defects_in(ctx, idx):
        if kind != "malformed":
            continue
        v = (bits >> 8) % 3
        if ctx.fam == "csv":
            cells = [c[p] for c in enc]
            if v == 0:
                recs[p] = ",".join(cells[:-1])  # a column short
            else:
                recs[p] = ",".join(cells) + ("," + '"extra"' if v == 1 else ",extra")  # one more
        else:  # ndjson (never for JSON arrays)
            r = recs[p]
            if v == 2:
                recs[p] = f'["not", "an", "object", {i}]'
            else:
                recs[p] = r[: max(1, len(r) // 2)]  # truncated: unbalanced braces
    return recs


# ------------------------------------------------------------------------------ expected


@dataclass
class Expected:
    """The exact outcome of importing a generated file into a database without its keys.

    ``errors``: sorted ``[row, line, field, code]`` (1-based record number and first physical
    line of the record; ``field`` is None for malformed records). ``failed`` = records with an
    error (each planted defect yields exactly one error). ``valid_ids`` is None when there are
    more than ``VALID_IDS_LIMIT`` valid records: use :meth:`valid_id_list`.
    """

    resource: str
    format: str
    rows: int
    seed: int
    defect_rate: float
    gzip: bool
    body_chars: int
    plain_csv: bool
    total_records: int
    successful: int
    failed: int
    errors: list[list[Any]]
    valid_keys: dict[str, int]
    defects: dict[str, int]
    parents: dict[str, dict[str, Any]]
    file: str
    valid_ids: list[str] | None = None
    generator_version: int = GENERATOR_VERSION
    path: str | None = field(default=None, compare=False)

    def valid_id_list(self) -> list[str]:
        if self.valid_ids is not None:
            return self.valid_ids
        return valid_ids(self.resource, self.seed, self.rows, self.defect_rate)

    def error_tuples(self) -> list[tuple[int, int, str | None, str]]:
        return [tuple(e) for e in self.errors]  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")

    @classmethod
    def load(cls, path: str) -> Expected:
        if not path.endswith(".expected.json"):
            path += ".expected.json"
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        data_path = path[: -len(".expected.json")]
        return cls(**d, path=data_path)


def parent_of(expected: Expected | str) -> Parent:
    """The Parent spec of a generated file (an Expected, its data path or its expected path)."""
    e = Expected.load(expected) if isinstance(expected, str) else expected
    return Parent(e.seed, e.rows, e.defect_rate)


# ------------------------------------------------------------------------------ driver


@contextmanager
def _open(out_path: str, gz: bool) -> Iterator[Any]:
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "wb") as raw:
        if not gz:
            yield raw
            return
        # no file name and mtime 0 in the header: the same input gives the same bytes
        with gzip_module.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL
        ) as f:
            yield f


def _resolve_parents(
    resource: str,
    seed: int,
    rows: int,
    defect_rate: float,
    users: Parent | None,
    articles: Parent | None,
) -> tuple[Parent, Parent]:
    users = users or Parent(seed, rows, defect_rate)
    articles = articles or Parent(seed, rows, defect_rate)
    needed = {"users": (), "articles": ("users",), "comments": ("users", "articles")}[resource]
    for name, p in (("users", users), ("articles", articles)):
        if rows and name in needed and p.rows < 1:
            raise ValueError(f"the parent {name} file must have at least one record")
    return users, articles


def _chunk_rows(resource: str, body_chars: int) -> int:
    """Records per chunk: bounded text per chunk keeps memory constant (~100 MB peak)."""
    if resource == "articles":
        return max(200, min(CHUNK_ROWS, 2_000_000 // max(1, body_chars)))
    return CHUNK_ROWS // 2 if resource == "comments" else CHUNK_ROWS


def generate(
    resource: str,
    fmt: str,
    rows: int,
    seed: int,
    defect_rate: float,
    out_path: str,
    gzip: bool = False,
    body_chars: int = 400,
    *,
    plain_csv: bool = False,
    users: Parent | None = None,
    articles: Parent | None = None,
    write_expected: bool = True,
) -> Expected:
    """Write ``out_path`` (and ``out_path + ".expected.json"``); return the expected outcome.

    ``users`` / ``articles`` describe the files references point into (default: the same seed,
    rows and defect rate as this file). ``plain_csv`` writes only the valid records, typed, in
    PostgreSQL ``COPY ... (FORMAT csv, HEADER true)`` form with the table's column order.
    """
    if resource not in RESOURCES:
        raise ValueError(f"resource must be one of {RESOURCES}")
    if plain_csv:
        fmt = "csv"
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    if rows < 0 or not 0 <= defect_rate < 1:
        raise ValueError("rows must be >= 0 and 0 <= defect_rate < 1")
    users, articles = _resolve_parents(resource, seed, rows, defect_rate, users, articles)
    plan = _plan(resource, seed, rows, defect_rate, fmt)
    ctx = _Ctx(
        resource, "plain" if plain_csv else fmt, seed, rows, body_chars, plan, users, articles
    )
    build = _BUILDERS[resource]
    errors: list[list[Any]] = []
    with _open(out_path, gzip) as f:
        if ctx.fam in ("csv", "plain"):
            f.write((",".join(COLUMNS[resource]) + "\n").encode())
        elif fmt == "json":
            f.write(b"[\n" if rows else b"[\n]\n")
        # physical line of the next record: after the CSV header or the JSON array's "["
        line = 1 if fmt == "ndjson" else 2
        step = _chunk_rows(resource, body_chars)
        for start in range(0, rows, step):
            idx = np.arange(start, min(rows, start + step), dtype=np.int64)
            cols = build(ctx, idx)
            recs = _encode(ctx, idx, cols)
            if ctx.fam == "plain":
                keep = plan.kind[idx] < 0
                recs = [r for r, k in zip(recs, keep.tolist(), strict=True) if k]
                f.write(("\n".join(recs) + "\n").encode() if recs else b"")
                continue
            if ctx.fam == "csv":
                nl = np.fromiter((r.count("\n") for r in recs), dtype=np.int64, count=len(recs))
                lines = line + np.arange(len(recs)) + np.concatenate(([0], np.cumsum(nl)[:-1]))
                line = int(lines[-1] + nl[-1] + 1)
            else:
                lines = line + np.arange(len(recs))
                line += len(recs)
            for p, i, kind, _ in _defects_in(ctx, idx):
                fld, code = next((fl, c) for k, fl, c in plan.kinds if k == kind)
                errors.append([i + 1, int(lines[p]), fld, code])
            if fmt == "json":
                text = ("" if start == 0 else ",\n") + ",\n".join(recs)
                if idx[-1] == rows - 1:
                    text += "\n]\n"
            else:
                text = "\n".join(recs) + "\n"
            f.write(text.encode())
    n_valid = len(plan.valid)
    defects: dict[str, int] = {}
    if not plain_csv:
        counts = np.bincount(plan.kind[plan.kind >= 0], minlength=len(plan.kinds))
        defects = {k[0]: int(c) for k, c in zip(plan.kinds, counts.tolist(), strict=True)}
    keys = {"users": ("id", "email"), "articles": ("id", "slug"), "comments": ("id",)}[resource]
    parents: dict[str, dict[str, Any]] = {}
    if resource in ("articles", "comments"):
        parents["users"] = asdict(users)
    if resource == "comments":
        parents["articles"] = asdict(articles)
    exp = Expected(
        resource=resource,
        format=fmt,
        rows=rows,
        seed=seed,
        defect_rate=defect_rate,
        gzip=gzip,
        body_chars=body_chars,
        plain_csv=plain_csv,
        total_records=n_valid if plain_csv else rows,
        successful=n_valid,
        failed=0 if plain_csv else len(errors),
        errors=sorted(errors, key=lambda e: (e[0], e[2] or "")),
        valid_keys={k: n_valid for k in keys},
        defects=defects,
        parents=parents,
        file=os.path.basename(out_path),
        valid_ids=valid_ids(resource, seed, rows, defect_rate)
        if n_valid <= VALID_IDS_LIMIT
        else None,
        path=out_path,
    )
    if write_expected:
        exp.write(out_path + ".expected.json")
    return exp


def iter_valid_records(
    resource: str,
    seed: int,
    rows: int,
    defect_rate: float,
    *,
    body_chars: int = 400,
    users: Parent | None = None,
    articles: Parent | None = None,
) -> Iterator[dict[str, Any]]:
    """The valid records as they should be stored (table column order): ``active`` a bool,
    ``tags`` a list, absent optional values None, timestamps as the ISO strings in the file."""
    users, articles = _resolve_parents(resource, seed, rows, defect_rate, users, articles)
    plan = _plan(resource, seed, rows, defect_rate, "csv")
    ctx = _Ctx(resource, "plain", seed, rows, body_chars, plan, users, articles)
    names = COLUMNS[resource]
    step = _chunk_rows(resource, body_chars)
    for start in range(0, rows, step):
        idx = np.arange(start, min(rows, start + step), dtype=np.int64)
        cols = _BUILDERS[resource](ctx, idx)
        keep = (plan.kind[idx] < 0).tolist()
        for p, t in enumerate(zip(*cols, strict=True)):
            if keep[p]:
                yield dict(zip(names, t, strict=True))


# ------------------------------------------------------------------------------ samples

#: (file name, resource, format, gzip, plain_csv): all rows=40, seed=7, defect_rate=0.25.
SAMPLES = (
    ("users.csv", "users", "csv", False, False),
    ("users.ndjson", "users", "ndjson", False, False),
    ("users.json", "users", "json", False, False),
    ("articles.ndjson", "articles", "ndjson", False, False),
    ("articles.csv", "articles", "csv", False, False),
    ("comments.ndjson", "comments", "ndjson", False, False),
    ("comments.csv.gz", "comments", "csv", True, False),
    ("users.plain.csv", "users", "csv", False, True),
)
SAMPLE_ROWS, SAMPLE_SEED, SAMPLE_DEFECT_RATE, SAMPLE_BODY_CHARS = 40, 7, 0.25, 160


def write_samples(directory: str) -> list[Expected]:
    return [
        generate(
            res,
            fmt,
            SAMPLE_ROWS,
            SAMPLE_SEED,
            SAMPLE_DEFECT_RATE,
            os.path.join(directory, name),
            gzip=gz,
            body_chars=SAMPLE_BODY_CHARS,
            plain_csv=plain,
        )
        for name, res, fmt, gz, plain in SAMPLES
    ]


# ------------------------------------------------------------------------------ CLI


def _parent_arg(args: argparse.Namespace, name: str, inherited: Parent | None) -> Parent | None:
    path = getattr(args, f"{name}_from")
    base = parent_of(path) if path else inherited
    rows = getattr(args, f"{name}_rows")
    rate = getattr(args, f"{name}_defect_rate")
    seed = getattr(args, f"{name}_seed")
    if base is None and rows is None and rate is None and seed is None:
        return None
    base = base or Parent(args.seed, args.rows, args.defect_rate)
    return Parent(
        base.seed if seed is None else seed,
        base.rows if rows is None else rows,
        base.defect_rate if rate is None else rate,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--resource", choices=RESOURCES)
    p.add_argument("--format", choices=FORMATS, default="csv")
    p.add_argument("--rows", type=int)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--defect-rate", type=float, default=0.05)
    p.add_argument("--gzip", action="store_true", help="gzip the output (mtime 0: reproducible)")
    p.add_argument("--body-chars", type=int, default=400, help="approximate article body size")
    p.add_argument("--out", help="output path; the expected outcome goes to OUT.expected.json")
    p.add_argument(
        "--plain-csv",
        action="store_true",
        help="valid records only, PostgreSQL COPY CSV (HEADER) in table column order",
    )
    for parent in ("users", "articles"):
        p.add_argument(
            f"--{parent}-from",
            metavar="PATH",
            help=f"the {parent} file (or its .expected.json) references point into",
        )
        p.add_argument(f"--{parent}-rows", type=int)
        p.add_argument(f"--{parent}-defect-rate", type=float)
        p.add_argument(f"--{parent}-seed", type=int)
    p.add_argument("--valid-ids-out", metavar="PATH", help="also write the valid ids, one a line")
    p.add_argument("--samples", metavar="DIR", help="(re)generate the committed sample files")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.samples:
        for e in write_samples(args.samples):
            if not args.quiet:
                print(f"{e.file}: {e.total_records} records, {e.failed} failed", file=sys.stderr)
        return 0
    if not (args.resource and args.rows is not None and args.out):
        p.error("--resource, --rows and --out are required")
    articles_inherit: Parent | None = None
    users_inherit: Parent | None = None
    if args.articles_from:
        a_exp = Expected.load(args.articles_from)
        if "users" in a_exp.parents:
            users_inherit = Parent(**a_exp.parents["users"])
    users = _parent_arg(args, "users", users_inherit)
    articles = _parent_arg(args, "articles", articles_inherit)
    t0 = time.perf_counter()
    exp = generate(
        args.resource,
        args.format,
        args.rows,
        args.seed,
        args.defect_rate,
        args.out,
        gzip=args.gzip,
        body_chars=args.body_chars,
        plain_csv=args.plain_csv,
        users=users,
        articles=articles,
    )
    dt = time.perf_counter() - t0
    if args.valid_ids_out:
        with open(args.valid_ids_out, "w") as f:
            for chunk_start in range(0, exp.successful, CHUNK_ROWS * 10):
                v = valid_indexes(exp.resource, exp.seed, exp.rows, exp.defect_rate)
                sel = v[chunk_start : chunk_start + CHUNK_ROWS * 10]
                f.write("".join(x + "\n" for x in ids_for(exp.resource, exp.seed, sel)))
    if not args.quiet:
        size = os.path.getsize(args.out)
        print(
            f"{args.out}: {exp.total_records} records ({exp.failed} with errors), "
            f"{size / 1e6:.1f} MB in {dt:.2f} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
