"""Running the client: click without its own exit handling, every error a message and an exit
code (engine/client/errors.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import IO

import click
import httpx
from rich.console import Console

from engine.client.commands import Env, cli
from engine.client.errors import ClientError, Exit, NotAllowed


def main(
    argv: Sequence[str] | None = None,
    *,
    console: Console | None = None,
    interactive: bool | None = None,
    transport: httpx.BaseTransport | None = None,
    stdout: IO[str] | None = None,
    environ: dict[str, str] | None = None,
    extra_commands: Sequence[click.Command] = (),
) -> int:
    """Run one client command; its exit code.

    ``console``/``interactive`` replace stderr's console (the docs picture records one),
    ``transport`` the network (unit tests), ``extra_commands`` join the help (the admin
    commands of engine/cli.py).
    """
    for command in extra_commands:
        cli.add_command(command)
    env = Env(
        console=console,
        interactive=interactive,
        transport=transport,
        stdout=stdout,
        environ=dict(os.environ) if environ is None else environ,
    )
    err = console if console is not None else Console(stderr=True)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="bulkio", standalone_mode=False, obj=env)
    except click.exceptions.Abort:
        err.print("interrupted", markup=False, highlight=False)
        return 130
    except click.ClickException as exc:
        # Usage errors exit 1, not click's 2: 2 means that a job failed.
        exc.show(file=err.file)
        return Exit.ERROR
    except ClientError as exc:
        message = str(exc)
        if isinstance(exc, NotAllowed) and exc.status == 401:
            message += " (check the token: --token, BULKIO_TOKEN or bulkio login)"
        err.print(f"error: {message}", style="bold red", markup=False, highlight=False,
                  soft_wrap=True)  # fmt: skip
        return int(exc.exit_code)
    return int(code or 0)
