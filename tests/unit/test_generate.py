"""The test-data generator: determinism, planted defects, exact expectations, line numbers.

The expected outcome of every generated file is re-derived here by an independent reference
importer (stdlib csv/json + the documented rules), so a wrong expectation cannot hide behind the
generator's own bookkeeping.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.datafiles import ROOT, gen

ROWS = 2_000
SEED = 11

# ------------------------------------------------------------------ reference importer

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CM = re.compile(r"^cm_[A-Za-z0-9_-]{1,64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?(Z|[+-]\d{2}:\d{2})$")


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


def _ts_ok(v: str) -> bool:
    if not _ISO.match(v.strip()):
        return False
    try:
        datetime.fromisoformat(v.strip())
    except ValueError:
        return False
    return True


def _tags_ok(v: Any, csv_cell: bool) -> bool:
    if csv_cell:
        v = (v or "").strip()
        if v.startswith("["):
            try:
                v = json.loads(v)
            except ValueError:
                return False
        else:
            v = v.split("|") if v else []
    return isinstance(v, list) and all(isinstance(t, str) and t.strip() for t in v)


def _check(resource: str, rec: dict[str, Any], csv_cell: bool) -> list[tuple[str, str]]:
    """Field-level errors (required / format / value / too_long) of one record."""
    errs: list[tuple[str, str]] = []

    def req(f: str) -> bool:
        if _empty(rec.get(f)):
            errs.append((f, "required"))
            return False
        return True

    def ts(f: str, required: bool) -> None:
        v: Any = rec.get(f)
        if _empty(v):
            if required:
                errs.append((f, "required"))
        elif not _ts_ok(v):
            errs.append((f, "invalid_format"))

    rid: Any = rec.get("id")
    if resource == "users":
        if not _empty(rid) and not _UUID.match(rid):
            errs.append(("id", "invalid_format"))
        if req("email") and not _EMAIL.match(rec["email"].strip()):
            errs.append(("email", "invalid_format"))
        req("name")
        if req("role") and rec["role"].strip().lower() not in gen.ROLES:
            errs.append(("role", "invalid_value"))
        a = rec.get("active")
        if not (
            a is None
            or isinstance(a, bool)
            or (isinstance(a, str) and a.strip().lower() in ("", "true", "false"))
        ):
            errs.append(("active", "invalid_format"))
        ts("created_at", True)
        ts("updated_at", False)
    elif resource == "articles":
        if not _empty(rid) and not _UUID.match(rid):
            errs.append(("id", "invalid_format"))
        if req("slug") and not _SLUG.match(rec["slug"].strip()):
            errs.append(("slug", "invalid_format"))
        req("title")
        req("body")
        if req("author_id") and not _UUID.match(rec["author_id"]):
            errs.append(("author_id", "invalid_format"))
        if not _tags_ok(rec.get("tags"), csv_cell):
            errs.append(("tags", "invalid_format"))
        if req("status") and rec["status"] not in ("draft", "published"):
            errs.append(("status", "invalid_value"))
        ts("published_at", False)
        ts("created_at", True)
        if rec.get("status") == "draft" and not _empty(rec.get("published_at")):
            errs.append(("published_at", "invalid_value"))
    else:
        if not _empty(rid) and not (_UUID.match(rid) or _CM.match(rid)):
            errs.append(("id", "invalid_format"))
        for f in ("article_id", "user_id"):
            if req(f) and not _UUID.match(rec[f]):
                errs.append((f, "invalid_format"))
        if req("body") and len(rec["body"].split()) > 500:
            errs.append(("body", "too_long"))
        ts("created_at", True)
    return errs


def read_records(path: Path, fmt: str) -> list[tuple[int, dict[str, Any] | None]]:
    """(start line, record or None if malformed) per record, read with the stdlib only."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        text = f.read()
    out: list[tuple[int, dict[str, Any] | None]] = []
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            out.append(
                (start, dict(zip(header, row, strict=True)) if len(row) == len(header) else None)
            )
    elif fmt == "ndjson":
        for n, line in enumerate(text.split("\n")[:-1], start=1):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            out.append((n, obj if isinstance(obj, dict) else None))
    else:
        whole = json.loads(text)
        lines = text.split("\n")
        assert lines[0] == "[" and lines[-2] == "]" and lines[-1] == ""
        for n, line in enumerate(lines[1:-2], start=2):
            out.append((n, json.loads(line.rstrip(","))))
        assert [r for _, r in out] == whole
    return out


def reference_import(
    resource: str, path: Path, fmt: str, known: dict[str, set[str]]
) -> tuple[list[tuple[int, int, str | None, str]], list[str]]:
    """Errors ``(row, line, field, code)`` and accepted ids, per the documented rules."""
    errors: list[tuple[int, int, str | None, str]] = []
    accepted: list[str] = []
    seen: dict[str, set[str]] = {"id": set(), "email": set(), "slug": set()}
    for row, (line, rec) in enumerate(read_records(path, fmt), start=1):
        if rec is None:
            errors.append((row, line, None, "malformed_record"))
            continue
        errs = _check(resource, rec, fmt == "csv")
        if not errs:
            if _empty(rec.get("id")) and resource in ("users", "articles"):
                errs.append(("id", "required"))  # matches no existing row: the table is empty
            elif rec["id"] in seen["id"]:
                errs.append(("id", "duplicate_in_file"))
            if resource == "users" and rec["email"].strip().lower() in seen["email"]:
                errs.append(("email", "duplicate_in_file"))
            if resource == "articles" and rec["slug"] in seen["slug"]:
                errs.append(("slug", "duplicate_in_file"))
        if not errs:
            refs = {
                "articles": [("author_id", "users")],
                "comments": [("article_id", "articles"), ("user_id", "users")],
            }.get(resource, [])
            errs += [(f, "foreign_key") for f, table in refs if rec[f] not in known[table]]
        if errs:
            errors += [(row, line, f, c) for f, c in errs]
            continue
        accepted.append(rec["id"])
        seen["id"].add(rec["id"])
        if resource == "users":
            seen["email"].add(rec["email"].strip().lower())
        if resource == "articles":
            seen["slug"].add(rec["slug"])
    return sorted(errors, key=lambda e: (e[0], e[2] or "")), accepted


# ------------------------------------------------------------------------------ tests


def _gen(
    tmp: Path,
    resource: str,
    fmt: str,
    rows: int = ROWS,
    seed: int = SEED,
    rate: float = 0.05,
    **kw: Any,
) -> tuple[Any, Path]:
    name = f"{resource}.{fmt}" + (".gz" if kw.get("gzip") else "")
    path = tmp / name
    return gen.generate(resource, fmt, rows, seed, rate, str(path), **kw), path


@pytest.mark.parametrize("fmt", gen.FORMATS)
def test_files_match_reference_importer(tmp_path: Path, fmt: str) -> None:
    """Generate users → articles → comments (same seed); import each with the reference."""
    known: dict[str, set[str]] = {}
    for resource in gen.RESOURCES:
        exp, path = _gen(tmp_path, resource, fmt, body_chars=120)
        errors, accepted = reference_import(resource, path, fmt, known)
        assert [tuple(e) for e in exp.errors] == errors
        assert exp.total_records == ROWS
        assert exp.failed == len({e[0] for e in exp.errors}) == len(exp.errors)  # one defect each
        assert exp.successful == ROWS - exp.failed == len(accepted)
        assert exp.valid_ids == accepted == gen.valid_ids(resource, SEED, ROWS, 0.05)
        assert exp.valid_keys == {k: len(accepted) for k in exp.valid_keys}
        # every defect kind is planted (no malformed records inside a JSON array)
        kinds = {k for k, _, _ in gen.DEFECTS[resource]} - (
            {"malformed"} if fmt == "json" else set()
        )
        assert set(exp.defects) == kinds and all(exp.defects[k] > 0 for k in kinds)
        assert sum(exp.defects.values()) == exp.failed
        codes = {(f, c) for _, _, f, c in exp.errors}
        assert codes == {(f, c) for k, f, c in gen.DEFECTS[resource] if k in kinds}
        known[resource] = set(accepted)
        saved = gen.Expected.load(str(path))
        assert saved.to_dict() == exp.to_dict()


def _stored(resource: str, rec: dict[str, Any], csv_cell: bool) -> dict[str, Any]:
    """What a valid record becomes in the table (empty optional → None, typed bool / tags)."""
    out: dict[str, Any] = {}
    for col in gen.COLUMNS[resource]:
        v: Any = rec.get(col)
        if col == "active":
            v = not (isinstance(v, str) and v.lower() == "false") and v is not False
        elif col == "tags":
            if csv_cell:
                v = json.loads(v) if v.startswith("[") else v.split("|")
        elif _empty(v):
            v = None
        out[col] = v
    return out


@pytest.mark.parametrize("fmt", gen.FORMATS)
def test_valid_records_are_the_same_in_every_format(tmp_path: Path, fmt: str) -> None:
    for resource in gen.RESOURCES:
        exp, path = _gen(tmp_path, resource, fmt, rows=3000, body_chars=200)
        bad = {row for row, *_ in exp.errors}
        got = [
            _stored(resource, rec, fmt == "csv")
            for row, (_, rec) in enumerate(read_records(path, fmt), start=1)
            if row not in bad and rec is not None
        ]
        want = list(gen.iter_valid_records(resource, SEED, 3000, 0.05, body_chars=200))
        assert got == want


def test_csv_has_multiline_records_and_line_numbers(tmp_path: Path) -> None:
    for resource in gen.RESOURCES:
        exp, path = _gen(tmp_path, resource, "csv")
        recs = read_records(path, "csv")
        assert len(recs) == ROWS
        assert recs[-1][0] > ROWS + 1  # embedded newlines push records down
        starts = [line for line, _ in recs]
        for row, line, _, _ in exp.errors:
            assert starts[row - 1] == line
        text = path.read_text(encoding="utf-8")
        assert '""' in text  # quoted fields with doubled quotes / quoted empty cells


def test_ndjson_lines_parse_except_malformed(tmp_path: Path) -> None:
    for resource in gen.RESOURCES:
        exp, path = _gen(tmp_path, resource, "ndjson")
        malformed = {row for row, _, _, code in exp.errors if code == "malformed_record"}
        lines = path.read_text(encoding="utf-8").split("\n")
        assert lines[-1] == "" and len(lines) - 1 == ROWS
        for n, line in enumerate(lines[:-1], start=1):
            try:
                ok = isinstance(json.loads(line), dict)
            except ValueError:
                ok = False
            assert ok == (n not in malformed), (n, line[:80])
        for row, line_no, _, _ in exp.errors:
            assert row == line_no


def test_deterministic_bytes(tmp_path: Path) -> None:
    for fmt in ("csv", "ndjson", "json"):
        _, pa = _gen(tmp_path / "a", "articles", fmt, rows=3000, gzip=True)
        _, pb = _gen(tmp_path / "b", "articles", fmt, rows=3000, gzip=True)
        assert pa.read_bytes() == pb.read_bytes()
        assert (
            Path(str(pa) + ".expected.json").read_bytes()
            == Path(str(pb) + ".expected.json").read_bytes()
        )
        _, pc = _gen(tmp_path / "c", "articles", fmt, rows=3000, seed=SEED + 1, gzip=True)
        assert gzip.decompress(pc.read_bytes()) != gzip.decompress(pa.read_bytes())


def test_clean_file_and_plain_csv(tmp_path: Path) -> None:
    exp, path = _gen(tmp_path, "users", "ndjson", rate=0)
    assert exp.errors == [] and exp.successful == exp.total_records == ROWS
    assert all(isinstance(json.loads(line), dict) for line in path.read_text().splitlines())
    for resource in gen.RESOURCES:
        full, _ = _gen(tmp_path, resource, "csv")
        plain, ppath = _gen(tmp_path / "plain", resource, "csv", plain_csv=True)
        assert plain.total_records == plain.successful == full.successful and plain.errors == []
        with open(ppath, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        assert tuple(rows[0]) == gen.COLUMNS[resource]
        assert [r[0] for r in rows[1:]] == full.valid_ids
        typed = list(gen.iter_valid_records(resource, SEED, ROWS, 0.05))
        assert [r["id"] for r in typed] == full.valid_ids
        for r, t in zip(rows[1:], typed, strict=True):
            if resource == "users":
                assert r[4] == ("true" if t["active"] else "false")
                assert (r[6] == "") == (t["updated_at"] is None)
            if resource == "articles":
                assert r[5] == "{" + ",".join(f'"{x}"' for x in t["tags"]) + "}"
                assert (r[7] == "") == (t["status"] == "draft")


def test_references_point_to_valid_parents(tmp_path: Path) -> None:
    users = gen.Parent(seed=5, rows=3000, defect_rate=0.2)
    articles = gen.Parent(seed=6, rows=1500, defect_rate=0.1)
    user_ids = set(gen.valid_ids("users", **vars(users)))
    article_ids = set(gen.valid_ids("articles", **vars(articles)))
    arts = gen.iter_valid_records("articles", 6, 1500, 0.1, users=users)
    assert {a["author_id"] for a in arts} <= user_ids
    comments = list(
        gen.iter_valid_records("comments", 9, 4000, 0.05, users=users, articles=articles)
    )
    assert {c["article_id"] for c in comments} <= article_ids
    assert {c["user_id"] for c in comments} <= user_ids
    ids = [c["id"] for c in comments]
    assert len(set(ids)) == len(ids)
    assert any(i.startswith("cm_") for i in ids) and any(_UUID.match(i) for i in ids)
    assert all(_UUID.match(i) or _CM.match(i) for i in ids)
    assert max(len(c["body"].split()) for c in comments) == 500


def test_scalar_uuid_matches_vectorised() -> None:
    for stream in ("users", "articles", "ghost_users"):
        vec = gen.uuids(stream, 42, [0, 1, 2, 999_999])
        assert vec == [gen.record_uuid(stream, 42, i) for i in (0, 1, 2, 999_999)]
        assert all(_UUID.match(u) and u[14] == "4" and u[19] in "89ab" for u in vec)


def test_cli_and_manifests(tmp_path: Path) -> None:
    u = tmp_path / "u.csv"
    assert (
        gen.main(
            [
                "--resource",
                "users",
                "--rows",
                "500",
                "--seed",
                "3",
                "--defect-rate",
                "0.1",
                "--out",
                str(u),
                "--quiet",
            ]
        )
        == 0
    )
    a = tmp_path / "a.ndjson"
    assert (
        gen.main(
            [
                "--resource",
                "articles",
                "--format",
                "ndjson",
                "--rows",
                "300",
                "--seed",
                "3",
                "--users-from",
                str(u),
                "--out",
                str(a),
                "--quiet",
            ]
        )
        == 0
    )
    c = tmp_path / "c.json"
    ids = tmp_path / "ids.txt"
    assert (
        gen.main(
            [
                "--resource",
                "comments",
                "--format",
                "json",
                "--rows",
                "200",
                "--seed",
                "3",
                "--articles-from",
                str(a),
                "--out",
                str(c),
                "--valid-ids-out",
                str(ids),
                "--quiet",
            ]
        )
        == 0
    )
    exp = gen.Expected.load(str(c))
    assert exp.parents == {
        "users": {"seed": 3, "rows": 500, "defect_rate": 0.1},
        "articles": {"seed": 3, "rows": 300, "defect_rate": 0.05},
    }
    assert ids.read_text().split() == exp.valid_id_list()
    known: dict[str, set[str]] = {}
    for res, path, fmt in (("users", u, "csv"), ("articles", a, "ndjson"), ("comments", c, "json")):
        errors, accepted = reference_import(res, path, fmt, known)
        assert errors == [tuple(e) for e in gen.Expected.load(str(path)).errors]
        known[res] = set(accepted)


def test_tiny_and_empty_files(tmp_path: Path) -> None:
    for fmt in gen.FORMATS:
        exp, path = _gen(tmp_path, "users", fmt, rows=0)
        assert exp.total_records == 0 and read_records(path, fmt) == []
        exp, path = _gen(tmp_path, "comments", fmt, rows=1, rate=0.5)
        assert exp.successful == 1 and len(read_records(path, fmt)) == 1


def test_committed_samples_are_current(tmp_path: Path) -> None:
    """Regenerate with ``python testdata/generate.py --samples testdata/samples``."""
    gen.write_samples(str(tmp_path))
    samples = ROOT / "testdata" / "samples"
    for name, *_ in gen.SAMPLES:
        for f in (name, name + ".expected.json"):
            assert (samples / f).read_bytes() == (tmp_path / f).read_bytes(), f
