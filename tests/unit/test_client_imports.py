"""The client is HTTP only: importing it, or running a client command through the ``bulkio``
console script's entry point, loads no database driver, Arrow/polars or server module."""

from __future__ import annotations

import subprocess
import sys
import textwrap

#: Top-level packages and engine modules a client must never load.
FORBIDDEN = (
    "psycopg", "psycopg_pool", "adbc_driver_postgresql", "adbc_driver_manager", "polars",
    "pyarrow", "numpy", "litestar", "dramatiq", "redis", "obstore",
    "engine.imports", "engine.exports", "engine.db", "engine.jobs", "engine.worker",
    "engine.queue", "engine.storage", "engine.checks", "engine._native", "api",
)  # fmt: skip


def _loaded_after(code: str) -> list[str]:
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import sys
        bad = {FORBIDDEN!r}
        print("\\n".join(sorted(m for m in sys.modules
                                if any(m == b or m.startswith(b + ".") for b in bad))))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    assert _loaded_after("import engine.client, engine.client.commands") == []


def test_a_client_command_through_the_console_script_loads_nothing_of_the_server() -> None:
    code = """
        import io, contextlib
        from engine import cli
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["jobs", "list", "--help"]) == 0
            assert cli.main(["--help"]) == 0
    """
    assert _loaded_after(code) == []


def test_the_check_sees_what_it_looks_for() -> None:
    assert "psycopg" in _loaded_after("import engine.db")
