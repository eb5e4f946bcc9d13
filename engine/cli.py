"""``bulkio`` command line: migrate, worker, reconcile-once."""

from __future__ import annotations

import argparse
import sys

from engine import db
from engine.logs import setup_logging
from engine.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bulkio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("worker", help="run one worker process (run one per CPU core)")
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level)
    if args.command == "migrate":
        applied = db.migrate(settings.database_url)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    if args.command == "worker":
        from engine.worker import run_worker

        run_worker(settings)
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
