"""What the built package says about itself: one version, its licence, abi3, types, locked tools.

Cheap checks of the metadata of the installed (editable) build and of the files it is built from.
A full wheel build takes too long for the suite; by hand: ``.venv/bin/python -m pip wheel
--no-deps --wheel-dir /tmp/bulkio-wheel .`` gives ``bulkio-<version>-cp311-abi3-<platform>.whl``,
which installs and imports on any CPython >= 3.11.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

#: Development tools: they belong in [dependency-groups], never in the published metadata.
DEV_TOOLS = (
    "pytest",
    "pytest-timeout",
    "pytest-benchmark",
    "hypothesis",
    "moto",
    "boto3",
    "schemathesis",
    "ruff",
    "mypy",
    "py-spy",
    "jsonschema",
    "pyyaml",
)


def _toml(path: str) -> dict[str, Any]:
    with (ROOT / path).open("rb") as f:
        return tomllib.load(f)


def _name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement string."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return _toml("pyproject.toml")


@pytest.fixture(scope="module")
def crate() -> dict[str, Any]:
    return _toml("native/Cargo.toml")


@pytest.fixture(scope="module")
def dist() -> metadata.PackageMetadata:
    try:
        return metadata.metadata("bulkio")
    except metadata.PackageNotFoundError:
        pytest.fail("bulkio is not installed: run `make setup` (not --no-build)")


# api/exports.py and api/imports.py still declare query parameters in styles litestar 2.25
# deprecates (`Parameter(query=...)`, `param: T = Parameter(...)`): building the app in-process
# warns. Not this test's concern (the integration tests run the API in granian).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_one_version_for_package_crate_and_openapi(
    pyproject: dict[str, Any],
    crate: dict[str, Any],
    dist: metadata.PackageMetadata,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert pyproject["project"]["dynamic"] == ["version"]
    assert "version" not in pyproject["project"], "the version lives in native/Cargo.toml only"
    cargo_version = crate["package"]["version"]
    # Cargo's 1.2.0-alpha.1 is PEP 440's 1.2.0a1; this project keeps plain X.Y.Z versions.
    assert re.fullmatch(r"\d+\.\d+\.\d+", cargo_version), cargo_version
    assert dist["Version"] == cargo_version, "installed build is stale: run `make setup`"
    assert engine.__version__ == cargo_version

    # create_app() points prometheus_client at a directory through this variable; keep it local.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    import api.app

    settings = Settings(metrics_dir=str(tmp_path))
    assert api.app.create_app(settings).openapi_schema.info.version == cargo_version
    # ...because the document takes engine's version, not a literal that happens to match.
    monkeypatch.setattr(api.app, "__version__", "9.8.7")
    assert api.app.create_app(settings).openapi_schema.info.version == "9.8.7"


def test_licence_is_mit_with_pep639_metadata(
    pyproject: dict[str, Any], dist: metadata.PackageMetadata
) -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert pyproject["project"]["license"] == "MIT"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    assert dist["Metadata-Version"] in {"2.4", "2.5"}
    assert dist["License-Expression"] == "MIT"
    assert dist.get_all("License-File") == ["LICENSE"]
    # PEP 639: no legacy License field and no licence classifier beside the expression.
    assert dist["License"] is None
    assert not [c for c in dist.get_all("Classifier") or [] if c.startswith("License ::")]


def test_project_metadata_for_a_newcomer(dist: metadata.PackageMetadata) -> None:
    urls = dict(u.split(", ", 1) for u in dist.get_all("Project-URL") or [])
    assert urls["Homepage"] == "https://github.com/bulkio/bulkio"
    assert urls["Issues"].startswith(urls["Homepage"])
    assert dist["Keywords"]
    classifiers = dist.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert dist["Requires-Python"] == ">=3.11"


def test_abi3_through_maturin_features_only(
    pyproject: dict[str, Any], crate: dict[str, Any]
) -> None:
    features = pyproject["tool"]["maturin"]["features"]
    assert "pyo3/abi3-py311" in features
    assert "pyo3/extension-module" in features
    # The oldest CPython the abi3 wheel supports is the oldest the project supports.
    assert pyproject["project"]["requires-python"] == ">=3.11"
    # Not in the crate: `cargo test` builds test binaries that must link libpython.
    pyo3 = crate["dependencies"]["pyo3"]
    assert not [f for f in pyo3.get("features", []) if f.startswith("abi3")]
    assert "extension-module" not in pyo3.get("features", [])

    from engine import _native

    assert _native.__file__ is not None
    assert _native.__file__.endswith(".abi3.so"), _native.__file__


def test_types_are_shipped() -> None:
    assert (ROOT / "engine" / "py.typed").is_file()
    assert (ROOT / "engine" / "_native.pyi").is_file()


def test_dev_tools_are_dependency_groups_not_extras(
    pyproject: dict[str, Any], dist: metadata.PackageMetadata
) -> None:
    assert "optional-dependencies" not in pyproject["project"]
    assert dist.get_all("Provides-Extra") is None
    published = {_name(r) for r in dist.get_all("Requires-Dist") or []}
    assert not published & set(DEV_TOOLS)
    groups = pyproject["dependency-groups"]
    grouped = {_name(r) for reqs in groups.values() for r in reqs if isinstance(r, str)}
    assert set(DEV_TOOLS) <= grouped
    dev_includes = {item["include-group"] for item in groups["dev"]}
    assert dev_includes == {g for g in groups if g != "dev"}


def test_lock_matches_pyproject_and_this_environment(pyproject: dict[str, Any]) -> None:
    lock = _toml("uv.lock")
    packages = {p["name"]: p for p in lock["package"]}
    me = packages["bulkio"]
    assert "version" not in me, "dynamic version: uv.lock must not pin the project's own version"
    locked_deps = {d["name"] for d in me["metadata"]["requires-dist"]}
    assert locked_deps == {_name(r) for r in pyproject["project"]["dependencies"]}, (
        "uv.lock is stale: run `.venv/bin/uv lock`"
    )
    locked_groups = {
        group: {d["name"] for d in deps} for group, deps in me["metadata"]["requires-dev"].items()
    }
    for group, reqs in pyproject["dependency-groups"].items():
        if group != "dev":
            assert locked_groups[group] == {_name(r) for r in reqs}, (
                f"uv.lock is stale for group {group}: run `.venv/bin/uv lock`"
            )

    # Set-up installs from the lock: what is installed here is what is locked.
    drift = {}
    for name, package in packages.items():
        if name == "bulkio":
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # locked for another platform or Python (e.g. pywin32)
        if installed != package["version"]:
            drift[name] = (installed, package["version"])
    assert not drift, f"installed != locked (run `make setup`): {drift}"
