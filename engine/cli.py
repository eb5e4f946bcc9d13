"""``bulkio`` command line: the client commands (import, export, jobs, login: engine/client/,
over HTTP) and the admin commands of an installation (migrate, worker, token, cleanup: here, on
its database and settings).

Exit codes of the admin commands: 0 done, 1 a failed action (e.g. no such token), 2 a usage or
configuration error (a wrong ``BULKIO_*`` value: the message names the variable and what it
allows). The client's are in ``bulkio --help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.logs import setup_logging
from engine.settings import Settings, SettingsError, load_settings, warn_unknown

if TYPE_CHECKING:
    import click

#: The admin commands and their one-line help (also listed by the client's ``--help``).
ADMIN_COMMANDS = {
    "migrate": "Admin: apply pending database migrations.",
    "worker": "Admin: run one worker process (run one per CPU core).",
    "token": "Admin: create, list or revoke API tokens.",
    "cleanup": "Admin: delete finished jobs past retention, with their files and reports.",
}


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bulkio`` console script: an admin command here, anything else the client's."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ADMIN_COMMANDS:
        return admin(args)
    # The client never loads the database driver or the pipelines (engine/client/).
    from engine.client import main as client_main

    return client_main(args, extra_commands=_admin_entries())


def _admin_entries() -> list[click.Command]:
    """The admin commands as entries of the client's command list, handing over to admin()."""
    import click

    def entry(name: str, help_text: str) -> click.Command:
        def run() -> int:
            return admin([name, *click.get_current_context().args])

        return click.Command(
            name,
            callback=run,
            help=help_text,
            short_help=help_text,
            add_help_option=False,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )

    return [entry(name, text) for name, text in ADMIN_COMMANDS.items()]


def admin(argv: list[str]) -> int:
    """migrate, worker, token, cleanup."""
    from engine import db

    parser = argparse.ArgumentParser(prog="bulkio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("worker", help="run one worker process (run one per CPU core)")
    token = sub.add_parser("token", help="create, list or revoke API tokens")
    tsub = token.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="create a token and print it (shown once)")
    create.add_argument("--owner", required=True, help="who the token acts for (owns its jobs)")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: imports:write,imports:read,exports:read,exports:write,admin",
    )
    create.add_argument("--name", default="", help="a label, e.g. the client's name")
    create.add_argument("--requests-per-minute", type=int, default=None)
    create.add_argument("--max-running-jobs", type=int, default=None)
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    tsub.add_parser("list", help="list tokens (never their secrets)")
    clean = sub.add_parser(
        "cleanup", help="delete finished jobs past retention, with their files and reports"
    )
    clean.add_argument(
        "--older-than-days",
        type=float,
        default=None,
        help="delete jobs finished more than this many days ago (default: BULKIO_RETENTION_DAYS)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    warn_unknown()
    if args.command == "migrate":
        applied = db.migrate(settings.database_url)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    if args.command == "token":
        return _token(args, settings.database_url)
    if args.command == "cleanup":
        return _cleanup(args, settings)
    if args.command == "worker":
        from engine.worker import run_worker

        run_worker(settings)
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


def _cleanup(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from engine import db
    from engine.retention import cleanup
    from engine.storage import open_storage

    days = settings.retention_days if args.older_than_days is None else args.older_than_days
    if args.older_than_days is None and days <= 0:
        print("retention is off (BULKIO_RETENTION_DAYS=0): nothing deleted")
        return 0
    if days < 0:
        print("error: --older-than-days must not be negative", file=sys.stderr)
        return 2
    with db.connect(settings.database_url) as conn:
        report = cleanup(conn, open_storage(settings), timedelta(days=days))
    print(
        f"deleted {report.jobs} jobs finished more than {days:g} days ago, "
        f"{report.objects} of their stored objects, {report.orphans} orphaned objects and "
        f"{report.idempotency_keys} abandoned idempotency keys"
    )
    return 0


def _token(args: argparse.Namespace, url: str) -> int:
    from engine import auth, db

    with db.connect(url) as conn:
        if args.action == "create":
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            try:
                token_id, token = auth.create_token(
                    conn,
                    args.owner,
                    scopes,
                    args.name,
                    args.requests_per_minute,
                    args.max_running_jobs,
                )
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"id:    {token_id}\ntoken: {token}\n(store it now: it is not shown again)")
            return 0
        if args.action == "revoke":
            if auth.revoke_token(conn, args.token_id):
                print(f"revoked {args.token_id}")
                return 0
            print(f"error: no active token {args.token_id}", file=sys.stderr)
            return 1
        for row in auth.list_tokens(conn):
            status = f"revoked {row[5]:%Y-%m-%d}" if row[5] else "active"
            print(f"{row[0]}  {row[1]:<16} {','.join(row[3]):<40} {status}  {row[2]}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
