"""Benchmark input files from ``testdata/generate.py``, cached in ``bench/.cache/``.

A file's name is derived from every generator argument plus a digest of the generator's source,
so a cached file is reused only if the same generator would write the same bytes. Files are
written under a temporary name and renamed when complete: an interrupted run never leaves a
truncated file behind that a later run would trust.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
GENERATOR = ROOT / "testdata" / "generate.py"

#: Import formats of the suite (the issue: users CSV, articles and comments NDJSON).
IMPORT_FORMATS = {"users": "csv", "articles": "ndjson", "comments": "ndjson"}
#: Media types sent with the uploads.
MEDIA_TYPES = {
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


def _load_generator() -> ModuleType:
    name = "bulkio_testdata_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the body runs
    spec.loader.exec_module(module)
    return module


def _generator_digest() -> str:
    return hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:10]


@dataclass(frozen=True)
class DataFile:
    """One generated file and what a correct import of it reports."""

    path: Path
    resource: str
    format: str  # csv | ndjson | plain (psql \copy CSV)
    rows: int  # records in the file
    valid: int  # records that must be stored
    #: the file is zstd-compressed (its format is what it holds)
    zstd: bool = False

    @property
    def media_type(self) -> str:
        if self.zstd:
            return "application/zstd"
        return MEDIA_TYPES["csv" if self.format == "plain" else self.format]


def data_file(
    resource: str,
    fmt: str,
    rows: int,
    *,
    seed: int = 1,
    defect_rate: float = 0.0,
    plain_csv: bool = False,
) -> DataFile:
    """The cached file (generated on first use). Parents are the same seed, rows and rate."""
    gen = _load_generator()
    kind = "plain" if plain_csv else fmt
    ext = "copy.csv" if plain_csv else fmt
    name = (
        f"{resource}-r{rows}-s{seed}-d{defect_rate:g}-{kind}"
        f"-v{gen.GENERATOR_VERSION}-{_generator_digest()}.{ext}"
    )
    path = CACHE / name
    expected_path = Path(f"{path}.expected.json")
    if not (path.is_file() and expected_path.is_file()):
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = CACHE / f".partial-{os.getpid()}-{name}"
        try:
            gen.generate(
                resource,
                "csv" if plain_csv else fmt,
                rows,
                seed,
                defect_rate,
                str(partial),
                plain_csv=plain_csv,
            )
            os.replace(f"{partial}.expected.json", expected_path)
            os.replace(partial, path)
        finally:
            for leftover in (partial, Path(f"{partial}.expected.json")):
                leftover.unlink(missing_ok=True)
    expected = gen.Expected.load(str(expected_path))
    return DataFile(path, resource, kind, int(expected.total_records), int(expected.successful))


def split_csv(source: DataFile, parts: int) -> list[DataFile]:
    """``source`` (a CSV import file) cut into ``parts`` files of consecutive records.

    Used for "two files at once": the halves of one generated file have disjoint ids *and*
    e-mails, which files of two different seeds do not guarantee (e-mails derive from the
    record index and a hashed name, so two seeds collide on a few hundred of 500,000).
    """
    if source.format != "csv" or source.valid != source.rows:
        raise ValueError("split_csv needs a clean CSV import file")
    stem = source.path.name.removesuffix(".csv")
    outs = [CACHE / f"{stem}.part{i + 1}of{parts}.csv" for i in range(parts)]
    per_part = -(-source.rows // parts)
    counts = [min(per_part, source.rows - i * per_part) for i in range(parts)]
    if not all(p.is_file() for p in outs):
        partials = [CACHE / f".partial-{os.getpid()}-{p.name}" for p in outs]
        try:
            with open(source.path, newline="", encoding="utf-8") as src:
                reader = csv.reader(src)
                header = next(reader)
                for partial, count in zip(partials, counts, strict=True):
                    with open(partial, "w", newline="", encoding="utf-8") as dst:
                        writer = csv.writer(dst, lineterminator="\n")
                        writer.writerow(header)
                        writer.writerows(itertools.islice(reader, count))
            for partial, out in zip(partials, outs, strict=True):
                os.replace(partial, out)
        finally:
            for partial in partials:
                partial.unlink(missing_ok=True)
    return [
        DataFile(out, source.resource, "csv", n, n) for out, n in zip(outs, counts, strict=True)
    ]


def _derived(source: DataFile, suffix: str, write: Callable[[Path], None]) -> Path:
    """``source``'s path plus ``suffix``, written by ``write`` on first use (atomically)."""
    out = source.path.with_name(source.path.name + suffix)
    if not out.is_file():
        partial = CACHE / f".partial-{os.getpid()}-{out.name}"
        try:
            write(partial)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return out


def parquet_file(source: DataFile) -> DataFile:
    """``source`` (a clean users CSV import file) as Parquet with typed columns (``active``
    boolean, timestamps in UTC, strings), in ONE row group: the case where a reader that does not
    stream inside row groups would hold the whole file. Timestamps are parsed as the import
    parses them (engine.imports.validate.parse_timestamps)."""
    if source.resource != "users" or source.format != "csv" or source.valid != source.rows:
        raise ValueError("parquet_file converts a clean users CSV import file")

    def write(path: Path) -> None:
        import polars as pl
        import pyarrow.parquet as pq

        from engine.imports.validate import parse_timestamps

        frame = pl.read_csv(source.path, infer_schema=False)
        typed = frame.with_columns(
            pl.col("active")
            .str.to_lowercase()
            .replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean),
            parse_timestamps(frame["created_at"]),
            parse_timestamps(frame["updated_at"]),
        )
        pq.write_table(typed.to_arrow(), path, row_group_size=typed.height)

    path = _derived(source, ".parquet", write)
    return DataFile(path, source.resource, "parquet", source.rows, source.valid)


def zstd_file(source: DataFile) -> DataFile:
    """``source`` compressed with zstd (pyarrow's stream, level 1), one frame."""

    def write(path: Path) -> None:
        import pyarrow as pa

        with open(source.path, "rb") as src, pa.OSFile(str(path), "wb") as raw, \
                pa.CompressedOutputStream(raw, "zstd") as out:  # fmt: skip
            while chunk := src.read(1 << 22):
                out.write(chunk)

    path = _derived(source, ".zst", write)
    return DataFile(path, source.resource, source.format, source.rows, source.valid, zstd=True)
