"""docker-compose.yml and the Dockerfile, checked without a Docker engine (CI has none).

The file must be valid against the Compose Specification's JSON schema (the copy check-jsonschema
ships, pinned through uv.lock), reference only images pinned by a tag, and every command it runs
must exist where it runs: ``bulkio`` and ``granian`` in the image the Dockerfile builds (the
wheel's [project.scripts] and its dependencies' console scripts), the other images' own programs
in theirs.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from engine import cli

ROOT = Path(__file__).resolve().parents[2]

#: Where the Dockerfile's runtime stage installs the wheel (its bin/ is first on PATH).
VENV_BIN = "/opt/venv/bin"

#: Programs of the images this file uses besides ours (each image's documented tools).
IMAGE_PROGRAMS = {
    "postgres": {"postgres", "pg_isready", "psql"},
    "redis": {"redis-server", "redis-cli"},
    "motoserver/moto": {"moto_server", "python"},
}

#: Programs of the Dockerfile's base image (python:*) that our services may call.
BASE_PROGRAMS = {"python", "pip"}


@dataclass
class Stage:
    name: str
    image: str
    lines: list[str] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    """Dockerfile instructions: continuation lines joined, blanks squeezed, comments dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(" ".join((current + line).split()))
        current = ""
    return out


def _stages(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), re.IGNORECASE)
            assert match, f"every stage is named: {line}"
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], match[1])
            stages.append(Stage(match[2], image))
        elif stages:
            stages[-1].lines.append(line)
    return stages


def _tag(image: str) -> str | None:
    """The tag of an image reference (None when it has none)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _repository(image: str) -> str:
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def _argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return _stages((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the image built from ./Dockerfile."""
    built = {name: s for name, s in compose["services"].items() if "build" in s}
    assert set(built) == {"migrate", "api", "worker"}
    return built


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(
        (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    )
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in named_volumes, f"{name}: volume {source} is not declared"


def test_images_are_pinned_by_tag(compose: dict[str, Any], stages: list[Stage]) -> None:
    images = [s["image"] for s in compose["services"].values()]
    images += [stage.image for stage in stages]
    for image in images:
        tag = _tag(image)
        assert tag, f"{image}: pin a tag"
        assert tag != "latest", f"{image}: 'latest' is not a pin"
    # MinIO's images left Docker Hub: S3 is moto's server.
    assert not [i for i in images if "minio" in i]


def test_one_image_built_once_in_stages(
    compose: dict[str, Any], ours: dict[str, dict[str, Any]], stages: list[Stage]
) -> None:
    runtime = stages[-1]
    assert runtime.name == "runtime"
    for name, service in ours.items():
        assert service["build"] == {"context": ".", "target": "runtime"}, name
        assert service["image"] == "bulkio:local", name
    # Rust only in the build stage: the runtime stage neither starts from nor copies it.
    rust_stages = {s.name for s in stages if _repository(s.image) == "rust"}
    assert rust_stages
    build = next(s for s in stages if any("uv build --wheel" in line for line in s.lines))
    assert any(re.match(rf"COPY --from=({'|'.join(rust_stages)}) ", ln) for ln in build.lines)
    assert _repository(runtime.image) == "python"
    assert not [ln for ln in runtime.lines if re.search(r"cargo|rustup|--from=rust", ln)]
    # The runtime stage installs the built wheel and the locked, hashed requirements.
    install = " ".join(ln for ln in runtime.lines if ln.startswith("RUN"))
    assert f"from={build.name}" in install
    assert "--require-hashes -r /dist/requirements.txt" in install
    assert "--no-deps /dist/bulkio-*.whl" in install
    assert any(re.match(rf"ENV PATH={VENV_BIN}:", ln) for ln in runtime.lines)


def test_commands_exist_in_their_images(
    compose: dict[str, Any], ours: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = set(pyproject["project"]["scripts"])
    dependencies = {
        re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0] for d in pyproject["project"]["dependencies"]
    }
    for dependency in dependencies:
        for entry in metadata.distribution(dependency).entry_points:
            if entry.group == "console_scripts":
                scripts.add(entry.name)
    assert {"bulkio", "granian"} <= scripts

    for name, service in compose["services"].items():
        argv = _argv(service.get("entrypoint")) + _argv(service.get("command"))
        checks = [argv] if argv else []
        health = service.get("healthcheck", {}).get("test")
        if health:
            assert health[0] == "CMD", f"{name}: exec-form health check (no shell needed)"
            checks.append(health[1:])
        for command in checks:
            program = command[0]
            if name in ours:
                if program.startswith("/"):
                    assert program.startswith(VENV_BIN + "/"), program
                    program = program.rsplit("/", 1)[1]
                assert program in scripts | BASE_PROGRAMS, f"{name}: {program} not in the image"
            else:
                known = IMAGE_PROGRAMS[_repository(service["image"])]
                assert program in known, f"{name}: {program} not in {service['image']}"

    # ...and their arguments parse: bulkio's subcommands, granian's options and app target.
    for name in ("migrate", "worker"):
        argv = _argv(ours[name]["command"])
        assert argv[0] == "bulkio"
        with pytest.raises(SystemExit) as exited:
            cli.main([*argv[1:], "--help"])
        assert exited.value.code == 0, name
    token = re.search(
        r"docker compose run --rm (\w+) bulkio (token create .*)",
        (ROOT / "docker-compose.yml").read_text(),
    )
    assert token and token[1] in ours
    with pytest.raises(SystemExit) as exited:
        cli.main([*shlex.split(token[2]), "--help"])
    assert exited.value.code == 0
    capsys.readouterr()

    from granian.cli import cli as granian_cli

    argv = _argv(ours["api"]["command"])
    assert argv[0] == "granian"
    params = granian_cli.make_context("granian", argv[1:]).params
    assert params["interface"] == "asgi" and params["factory"]
    module, _, attribute = params["app"].partition(":")
    assert module == "api.app" and attribute == "create_app"
    source = (ROOT / "api" / "app.py").read_text()
    assert re.search(r"^def create_app\(", source, re.MULTILINE)


def test_workers_metrics_reach_the_api(
    compose: dict[str, Any], ours: dict[str, dict[str, Any]]
) -> None:
    """Workers write Prometheus counters into BULKIO_METRICS_DIR; the API's /metrics reads it."""
    mounts = {}
    for name in ("api", "worker"):
        directory = ours[name]["environment"]["BULKIO_METRICS_DIR"]
        volumes = [v for v in ours[name]["volumes"] if v.split(":")[1] == directory]
        assert len(volumes) == 1, f"{name}: {directory} is not a volume"
        mounts[name] = volumes[0].split(":")[0]
    assert mounts["api"] == mounts["worker"]
    assert mounts["api"] in compose["volumes"]
    assert "replicas" in ours["worker"].get("deploy", {}), "workers scale"
