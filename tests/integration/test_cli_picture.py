"""The README's picture of the client (docs/cli.svg) is a real run: ``bulkio import`` of a file
with defects against the test service, its stderr recorded by a rich Console and exported as
SVG. The test checks what the picture shows; ``BULKIO_TEST_WRITE_DOCS=1`` also writes it to
docs/cli.svg (commit the result)."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from engine.client import main
from tests.support.datafiles import make
from tests.support.service import ROOT, Bulkio

pytestmark = pytest.mark.integration

PICTURE = ROOT / "docs" / "cli.svg"
WIDTH = 100


def test_the_readme_picture_is_a_real_import(
    service: Bulkio, datadir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated, expected = make(datadir, "users", "csv", 20_000, seed=61, defect_rate=0.02)
    path = tmp_path / "users.csv"
    shutil.copyfile(generated, path)
    console = Console(
        record=True, file=io.StringIO(), width=WIDTH, force_terminal=False,
        color_system="truecolor",
    )  # fmt: skip
    console.print("[bold green]$[/] bulkio import users.csv --resource users", highlight=False)
    stdout = io.StringIO()
    monkeypatch.chdir(tmp_path)  # the job's file name is the one the prompt shows
    code = main(
        ["import", "users.csv", "--resource", "users"],
        console=console,
        interactive=True,
        stdout=stdout,
        environ={
            "BULKIO_URL": f"http://127.0.0.1:{service.port}",
            "BULKIO_TOKEN": service.token,
        },
    )
    assert code == 0
    text = console.export_text(clear=False)
    lines = text.splitlines()
    assert re.fullmatch(r"upload +━+ 100% .*MB.*", lines[1]), text
    assert re.fullmatch(rf"completed +━+ 100% 20,000 records · {expected.failed:,} rejected .*",
                        lines[2]), text  # fmt: skip
    assert "│ Status   │ completed" in text
    assert f"First 5 of {expected.failed:,} errors" in text
    assert "bulkio jobs errors " in text
    assert all(len(line) <= WIDTH for line in lines)  # nothing cut off at the picture's edge
    svg = console.export_svg(title="bulkio import")
    assert svg.startswith("<svg") and "100%" in svg
    (tmp_path / "cli.svg").write_text(svg)
    if os.environ.get("BULKIO_TEST_WRITE_DOCS") == "1":
        PICTURE.parent.mkdir(exist_ok=True)
        PICTURE.write_text(svg)
