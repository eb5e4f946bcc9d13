"""The rule that keeps the layout readable (README "Module map"): arrows point down.

``api/`` reaches ``engine/`` only through its seams (the queue, jobs, resources, storage, the
export query and writers, format detection, uploads, webhooks, limits, auth) and its foundations
(settings, db, errors, logs, metrics); never through the import pipeline, the export runner, the
worker or the native module. ``engine/`` never imports ``api/``, and module-level imports have no
cycles.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What api/ may import from engine/ (a module or its package).
API_MAY_IMPORT = {
    "engine",  # __version__
    "engine.auth",
    "engine.db",
    "engine.errors",
    "engine.events",
    "engine.exports.compress",
    "engine.exports.query",
    "engine.exports.writers",
    "engine.formats",
    "engine.formats.mapping",
    "engine.job_list",
    "engine.jobs",
    "engine.limits",
    "engine.logs",
    "engine.metrics",
    "engine.netguard",
    "engine.prefetch",
    "engine.queue",
    "engine.reports",
    "engine.resources",
    "engine.settings",
    "engine.source_url",
    "engine.storage",
    "engine.uploads",
    "engine.webhooks",
}
#: Modules that must not even be loaded by ``import api.app`` (transitively).
API_MUST_NOT_LOAD = (
    "engine.imports",
    "engine._native",
    "engine.checks",
    "engine.worker",
    "engine.exports.run",
    "engine.formats.reader",
    "engine.webhook_delivery",
    "dramatiq.worker",
)


def _modules(top: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / top).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _top_level_imports(name: str, path: Path) -> set[str]:
    """Modules imported at module level (not inside functions or ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            # ``from engine import jobs`` imports the module engine.jobs
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    known = {name: path for top in ("engine", "api") for name, path in _modules(top)}
    return {
        name: {m for m in _top_level_imports(name, path) if m in known and m != name}
        for name, path in known.items()
    }


def test_api_imports_engine_only_through_its_seams() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module.startswith("api")
        for target in targets
        if target.startswith("engine") and target not in API_MAY_IMPORT
    )
    assert not wrong, wrong


def test_engine_never_imports_api() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module.startswith("engine")
        for target in targets
        if target == "api" or target.startswith("api.")
    )
    assert not wrong, wrong


def test_module_level_imports_have_no_cycle() -> None:
    graph = _graph()
    # A package's __init__ importing its own modules is not a cycle of the design.
    edges = {
        m: {t for t in targets if not (m and t.startswith(m + "."))} for m, targets in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, cycles


@pytest.mark.parametrize("entry", ["api.app", "engine.queue", "engine.client.main"])
def test_light_entry_points_load_no_pipeline(entry: str) -> None:
    """Checked in a fresh interpreter: what ``import <entry>`` loads, transitively."""
    code = f"import sys, json, {entry}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in API_MUST_NOT_LOAD)]
    assert not bad, f"import {entry} loads {bad}"
