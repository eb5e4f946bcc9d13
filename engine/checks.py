"""Vectorised value checks over polars String Series, implemented in Rust (``engine._native``).

This is the only module that imports ``engine._native``; everything else goes through these
functions. Each one takes a polars Series and returns a new Series with the same name and
length: a null input value gives a null output value. The Series' Arrow chunks are handed to
the native code zero-copy (through the Arrow PyCapsule interface) one chunk at a time, so a
chunked Series is never rechunked first.

Accepted input dtypes: ``String``, plus ``Null`` (all-null result), ``Categorical`` and
``Enum`` (cast to ``String`` first). Anything else raises ``TypeError``.

Rules (all byte-level, ASCII-only except ``word_count``):

* ``is_uuid``: canonical ``8-4-4-4-12`` hex with dashes, either case; no braces, no undashed
  32-digit form.
* ``is_email``: exactly one ``@``; local part 1-64 of letters, digits and
  ``!#$%&'*+/=?^_`{|}~.-``, not starting/ending with ``.``, no ``..``; domain 1-253 bytes,
  at least two ``.``-separated labels of 1-63 letters/digits/``-`` not starting/ending with
  ``-``, the last label at least two letters (letters only); total at most 254 bytes.
* ``is_slug``: ``^[a-z0-9]+(-[a-z0-9]+)*$``, at most 200 bytes.
* ``is_token_id``: ``prefix`` followed by 1..``max_len`` of ``[A-Za-z0-9_-]``.
* ``word_count``: number of runs of non-whitespace, whitespace being Unicode ``White_Space``
  (ASCII space/tab/newline/CR/VT/FF, NBSP, U+2000-U+200A, U+3000, ...). Note that Python's
  ``str.split()`` additionally splits on U+001C-U+001F; this function does not.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pyarrow as pa

from engine import _native
from engine._native import NativeError

__all__ = [
    "NativeError",
    "is_email",
    "is_slug",
    "is_token_id",
    "is_uuid",
    "utf8_error_offset",
    "word_count",
]


def _string_chunks(s: pl.Series) -> list[pa.Array]:
    if not isinstance(s, pl.Series):
        raise TypeError(
            f"expected a polars Series, got {type(s).__module__}.{type(s).__qualname__}"
        )
    dtype = s.dtype
    if dtype == pl.Null or isinstance(dtype, pl.Categorical | pl.Enum):
        s = s.cast(pl.String)
    elif dtype != pl.String:
        raise TypeError(f"expected a String Series, got Series {s.name!r} of dtype {dtype}")
    # Zero-copy: polars exports its chunks through __arrow_c_stream__ (as string_view).
    return pa.chunked_array(s).chunks


def _apply(
    s: pl.Series, kernel: Callable[[pa.Array], pa.Array], out_type: pa.DataType
) -> pl.Series:
    results = [kernel(chunk) for chunk in _string_chunks(s)]
    return pl.Series(name=s.name, values=pa.chunked_array(results, type=out_type))


def is_uuid(s: pl.Series) -> pl.Series:
    """Boolean Series: is the value a canonical dashed UUID (case-insensitive)?"""
    return _apply(s, _native.is_uuid, pa.bool_())


def is_email(s: pl.Series) -> pl.Series:
    """Boolean Series: is the value a syntactically plausible e-mail address?"""
    return _apply(s, _native.is_email, pa.bool_())


def is_slug(s: pl.Series) -> pl.Series:
    """Boolean Series: is the value a kebab-case slug of at most 200 bytes?"""
    return _apply(s, _native.is_slug, pa.bool_())


def is_token_id(s: pl.Series, prefix: str, max_len: int) -> pl.Series:
    """Boolean Series: is the value ``prefix`` + 1..``max_len`` of ``[A-Za-z0-9_-]``?"""
    if max_len < 0:
        raise ValueError(f"max_len must be >= 0, got {max_len}")
    return _apply(s, lambda chunk: _native.is_token_id(chunk, prefix, max_len), pa.bool_())


def word_count(s: pl.Series) -> pl.Series:
    """UInt32 Series: number of Unicode-whitespace-separated words in each value."""
    return _apply(s, _native.word_count, pa.uint32())


def utf8_error_offset(data: bytes) -> int | None:
    """Offset of the first byte of ``data`` that is not valid UTF-8 (a truncated sequence at
    the end included), or ``None`` when all of it is. Reads ``data`` in place."""
    return _native.utf8_error_offset(data)
