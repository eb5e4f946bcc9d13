"""Profile one 1M-row import in-process: the real job runner, without HTTP or Dramatiq.

    .venv/bin/python bench/profile_import.py comments            # users | articles | comments
    .venv/bin/python bench/profile_import.py comments --reference-checks triggers
    .venv/bin/py-spy record -r 100 --threads -o prof.svg -- \\
        .venv/bin/python bench/profile_import.py articles          # where the worker's CPU goes
    .venv/bin/python bench/profile_import.py articles --perf pg.perf   # the worker's bulk backend
        # (with set-based reference checks, clean batches are written on the locker's connections)

Starts a PostgreSQL with the benchmark settings (``bench/database.py``), loads the parents with
``\\copy`` (untimed), then runs :func:`engine.imports.run.run_import` on the cached benchmark file
(``bench/inputs.py``) with a local object store over ``bench/.cache``. Prints the wall time, the
CPU of this process (reading, validating, ADBC encoding), of the worker's bulk connection's backend
and of all server processes (from ``/proc``: the live ones plus those the postmaster reaped, as
the locker's connections, which also write clean batches with set-based reference checks), and
the time spent in ``BatchLoader.apply`` (waiting for the writer included) and in the locker's
statements. The figures of the README's "what limits the numbers" come from here.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# A script, not run by pytest: bench/ is on sys.path as the script's folder; the project root
# (for tests.support, which bench/database.py imports) is what pyproject's pythonpath gives pytest.
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from database import PARENTS, BenchDatabase, start_server  # noqa: E402
from inputs import CACHE, IMPORT_FORMATS, data_file  # noqa: E402
from obstore.store import LocalStore  # noqa: E402

from engine import db as engine_db  # noqa: E402
from engine import jobs  # noqa: E402
from engine.context import JobContext  # noqa: E402
from engine.imports import load, references  # noqa: E402
from engine.imports.run import run_import  # noqa: E402
from engine.resources import catalog  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.storage import Storage  # noqa: E402

ROWS = 1_000_000
SPENT: collections.Counter[str] = collections.Counter()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started

    return wrapper


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU seconds of ``pid`` (``children``: of its exited, reaped children instead)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def _backends_cpu(postmaster: int) -> float:
    """CPU seconds of the server's processes so far: live children plus reaped ones."""
    total = _cpu_seconds(postmaster, children=True)
    for task in Path(f"/proc/{postmaster}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += _cpu_seconds(int(child))
            except FileNotFoundError:
                continue  # exited meanwhile
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("resource", choices=("users", "articles", "comments"))
    parser.add_argument("--reference-checks", choices=references.MODES, default="auto")
    parser.add_argument("--perf", metavar="FILE", help="perf record the writing backend")
    args = parser.parse_args()

    load.BatchLoader.apply = _timed("apply", load.BatchLoader.apply)  # type: ignore[method-assign]
    references._lock = _timed("locker statements", references._lock)

    server = start_server()
    try:
        return _profile(server, args)
    finally:
        server.stop()


def _profile(server: Any, args: argparse.Namespace) -> int:
    database = BenchDatabase(server)
    resource = args.resource
    for parent in PARENTS[resource]:
        database.ensure_loaded(data_file(parent, "csv", ROWS, plain_csv=True))
    database.empty(resource)
    database.settle(PARENTS[resource])
    upload = data_file(resource, IMPORT_FORMATS[resource], ROWS)
    settings = Settings(database_url=database.url, reference_checks=args.reference_checks)
    conn = engine_db.connect(database.url)
    bulk = engine_db.connect_bulk(database.url)
    job = jobs.create(
        conn, job_id=str(uuid.uuid4()), kind="import", resource=resource,
        fmt=IMPORT_FORMATS[resource], mode="upsert", owner="profile",
        object_key=upload.path.name, total_bytes=upload.path.stat().st_size,
    )  # fmt: skip
    cur = bulk.cursor()
    cur.execute("SELECT pg_backend_pid()")
    backend = int(cur.fetchone()[0])
    cur.close()
    bulk.rollback()
    postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    ctx = JobContext(
        settings, Storage(LocalStore(str(CACHE)), "local"), catalog(settings.user_roles),
        conn, bulk, "profile", threading.Event(),
    )  # fmt: skip
    perf = None
    if args.perf:
        perf = subprocess.Popen(["perf", "record", "-g", "-o", args.perf, "-p", str(backend)],
                                stderr=subprocess.DEVNULL)  # fmt: skip
    cpu_backend, cpu_all, cpu_self = _cpu_seconds(backend), _backends_cpu(postmaster), os.times()
    started = time.perf_counter()
    status = run_import(ctx, job.id).value
    wall = time.perf_counter() - started
    after = os.times()
    backend_cpu = _cpu_seconds(backend) - cpu_backend
    all_cpu = _backends_cpu(postmaster) - cpu_all
    if perf is not None:
        perf.send_signal(2)
        perf.wait()
    own_cpu = after.user + after.system - cpu_self.user - cpu_self.system
    rows = database.count(resource)
    print(f"{resource}: {status}, {rows:,} rows in {wall:.2f} s "
          f"(reference checks: {args.reference_checks})")  # fmt: skip
    print(f"  CPU: this process {own_cpu:.2f} s, worker's bulk backend {backend_cpu:.2f} s, "
          f"all server processes {all_cpu:.2f} s")  # fmt: skip
    for name, seconds in SPENT.most_common():
        print(f"  in {name}: {seconds:.2f} s")
    conn.close()
    bulk.close()
    return 0 if status == "completed" and rows == upload.valid else 1


if __name__ == "__main__":
    raise SystemExit(main())
