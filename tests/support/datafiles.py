"""Generated import files (testdata/generate.py) cached per test session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ["EXT", "ROOT", "gen", "make"]

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> Any:
    if "bulkio_testdata_generate" in sys.modules:
        return sys.modules["bulkio_testdata_generate"]
    spec = importlib.util.spec_from_file_location(
        "bulkio_testdata_generate", ROOT / "testdata" / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bulkio_testdata_generate"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
EXT = {"csv": "csv", "ndjson": "ndjson", "json": "json"}


def make(
    folder: Path,
    resource: str,
    fmt: str,
    rows: int,
    *,
    seed: int = 1,
    defect_rate: float = 0.05,
    gzip: bool = False,
) -> tuple[Path, Any]:
    name = f"{resource}-{rows}-{seed}-{defect_rate}.{EXT[fmt]}" + (".gz" if gzip else "")
    path = folder / name
    exp_path = Path(str(path) + ".expected.json")
    if path.exists() and exp_path.exists():
        return path, gen.Expected.load(str(exp_path))
    expected = gen.generate(
        resource, fmt, rows, seed=seed, defect_rate=defect_rate, out_path=str(path), gzip=gzip
    )
    return path, expected
