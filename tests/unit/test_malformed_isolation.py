"""Malformed JSON records are isolated with work linear in the block (issue #8).

Records that look like objects (``{`` … ``}``) but are not valid JSON used to be found by
bisection: two parser calls per malformed record, so a file of nothing but malformed lines ran
~30x slower than a clean one. Work is counted here (parser calls), never timed.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.formats import parse
from engine.formats.framing import Block
from engine.formats.reader import Batch, read_batches

COLS = ["id", "name"]
#: Malformed objects whose brackets balance (a JSON array's framing must still find its ends).
BAD_SHAPES = (
    '{{"id": "{i}",}}',
    '{{"id": {i}x}}',
    "{{x{i}}}",
    '{{"id": "{i}" "name": 1}}',
    '{{"id": "{i}", "name": [1 2]}}',
)


def _read(data: bytes, fmt: str = "ndjson", batch_rows: int = 1000) -> list[Batch]:
    return list(
        read_batches(
            [data],
            fmt,
            COLS,
            [],
            batch_rows=batch_rows,
            max_record_bytes=1 << 20,
            max_decompressed_bytes=1 << 40,
        )
    )


@pytest.fixture
def parser_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the NDJSON parser (``engine.formats.parse._ndjson``)."""
    calls = [0]
    real = parse._ndjson

    def counting(data: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        calls[0] += 1
        return real(data, schema)

    monkeypatch.setattr(parse, "_ndjson", counting)
    return calls


def _lines(pattern: list[bool]) -> tuple[bytes, list[str], list[int]]:
    """NDJSON of good (True) and malformed (False) lines; the good ids, the bad line numbers."""
    out, good, bad = [], [], []
    for i, ok in enumerate(pattern):
        if ok:
            out.append(json.dumps({"id": str(i), "name": f"n{i}"}))
            good.append(str(i))
        else:
            out.append(BAD_SHAPES[i % len(BAD_SHAPES)].format(i=i))
            bad.append(i + 1)
    return ("\n".join(out) + "\n").encode(), good, bad


@pytest.mark.parametrize("rows", [1_000, 4_000])
def test_a_block_of_malformed_lines_costs_a_few_parser_calls(
    rows: int, parser_calls: list[int]
) -> None:
    data, _, bad = _lines([False] * rows)
    batches = _read(data, batch_rows=rows)
    assert len(batches) == 1
    assert batches[0].errors.get_column("line").to_list() == bad
    assert set(batches[0].errors.get_column("code")) == {"malformed_record"}
    assert parser_calls[0] <= 2, parser_calls  # was 2 * rows - 1


def test_a_clean_block_is_parsed_once(parser_calls: list[int]) -> None:
    data, good, _ = _lines([True] * 2_000)
    batches = _read(data, batch_rows=2_000)
    assert batches[0].frame.get_column("id").to_list() == good
    assert parser_calls[0] == 1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_interleaved_good_and_malformed_records_are_told_apart(
    seed: int, fmt: str, parser_calls: list[int]
) -> None:
    """Random mixes (sparse, dense, alternating: more than 64 runs of good records) give the
    rows and error rows of reading every record alone, in a bounded number of parser calls."""
    rng = random.Random(seed)
    share = [0.02, 0.5, 0.98][seed % 3]
    pattern = [rng.random() > share for _ in range(3_000)]
    data, good, bad = _lines(pattern)
    if fmt == "json":
        data = b"[" + data.rstrip(b"\n").replace(b"\n", b",\n") + b"]"
    batches = _read(data, fmt)
    frame = pl.concat([b.frame for b in batches])
    errors = pl.concat([b.errors for b in batches])
    assert frame.get_column("id").to_list() == good
    assert frame.get_column("name").to_list() == [f"n{i}" for i in good]
    assert frame.get_column("__line").to_list() == [int(i) + 1 for i in good]
    assert errors.get_column("line").to_list() == bad
    assert errors.get_column("row").to_list() == bad  # one record per line, no blank lines
    assert parser_calls[0] <= 2 * len(batches), parser_calls


def test_the_check_stays_behind_the_parser_when_they_disagree() -> None:
    """Should the parser refuse a record the vectorised check accepts, bisection still finds it
    (a parser that refuses the records holding "7" stands in for such a disagreement)."""
    data, _, _ = _lines([True] * 50)
    block = Block(0, data, np.flatnonzero(np.frombuffer(data, np.uint8) == 0x0A) + 1, 0, 0)
    geo = parse.layout(block)
    schema: dict[str, Any] = {c: pl.String() for c in COLS}

    def picky(idx: np.ndarray) -> pl.DataFrame:
        body = parse._subset_bytes(data, geo, idx)
        if b'"7' in body:
            raise pl.exceptions.ComputeError("refused")
        return parse._ndjson(body, schema)

    frames, bad = parse._isolate_json(picky, data, geo, np.arange(50))
    assert bad == [7]
    assert pl.concat(frames).get_column("id").to_list() == [str(i) for i in range(50) if i != 7]


def test_py_whitespace_is_what_str_strip_takes() -> None:
    assert set(parse.PY_WHITESPACE) == {c for c in map(chr, range(0x110000)) if c.isspace()}


def _expected_error(record: bytes, kind: str, shaped: bool) -> tuple[str, str]:
    """(message, value) as the per-record Python loop made them before."""
    text = record.decode().strip().rstrip(",").strip()
    if shaped:
        message = f"{kind} is not a valid JSON object"
    else:
        first = text[:1]
        what = (
            "nothing" if not first
            else "an array" if first == "["
            else "a string" if first == '"'
            else "a boolean" if text in ("true", "false")
            else "null" if text == "null"
            else "a number" if first in "-0123456789"
            else "something"
        )  # fmt: skip
        message = f"{kind} holds {what}, not a JSON object"
    return message, text[:256].replace("\x00", parse.NUL_SHOWN)


NOT_OBJECTS = [
    "[1, 2]", '"a string"', "true", "false", "null", "-1.5", "0", "nope", "\x1c 7 \x1f",
    "\u3000[\u00e9]\u2028", '"\x00"', "[" + "\u00e9" * 300 + "]", "truely", "nullx",
    '\u00a0{"a": 1}\u00a0',  # not shaped: the shape check steps over ASCII whitespace only
]  # fmt: skip
SHAPED_BAD = ['{"id": 1,}', "{\x00}", "{" + "\u00e9" * 400 + "}", ' \t{"a" 1}\r ']


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_error_rows_of_malformed_records_say_what_they_hold(fmt: str) -> None:
    records = [(r, False) for r in NOT_OBJECTS] + [(r, True) for r in SHAPED_BAD]
    good = '{"id": "ok"}'
    texts = [good] + [r for r, _ in records]
    if fmt == "ndjson":
        data = ("\n".join(texts) + "\n").encode()
        raw = [t.encode() for t in texts]
    else:
        data = ("[" + ",\n".join(texts) + "]").encode()
        raw = [t.encode() + b"," for t in texts[:-1]] + [texts[-1].encode()]
    (batch,) = _read(data, fmt)
    assert batch.frame.get_column("id").to_list() == ["ok"]
    kind = "the line" if fmt == "ndjson" else "the element of the JSON array"
    expected = [
        _expected_error(b"\n" + r if fmt == "json" and i else r, kind, shaped)
        for i, (r, (_, shaped)) in enumerate(zip(raw[1:], records, strict=True))
    ]
    got = list(zip(batch.errors["message"].to_list(), batch.errors["value"].to_list(),
                   strict=True))  # fmt: skip
    assert got == expected
    assert batch.errors["line"].to_list() == list(range(2, len(texts) + 1))


def test_records_over_the_json_limits_keep_their_own_message() -> None:
    deep = "{" + '"a":[' * 70 + "]" * 70 + "}"
    wide = "{" + ",".join(f'"k{i}": 1' for i in range(parse.MAX_FIELDS + 1)) + "}"
    data = (deep + "\n" + '{"id": 1,}' + "\n" + wide + "\n").encode()
    (batch,) = _read(data)
    assert batch.errors["message"].to_list() == [
        f"the record nests arrays/objects 71 levels deep; at most {parse.MAX_JSON_DEPTH} are "
        "accepted",
        "the line is not a valid JSON object",
        f"the object has {parse.MAX_FIELDS + 1} fields; at most {parse.MAX_FIELDS} are accepted",
    ]
    assert batch.errors["value"].to_list() == [deep[:256], '{"id": 1,}', wide[:256]]
