"""The one wrapper of a child process in the tests and benchmarks: the throwaway servers, the
bulkio API (granian) and its workers, and the processes a test starts itself.

Each :class:`Proc` runs in its own session (a Ctrl-C in the terminal reaches pytest, which stops
its children cleanly) with its output appended to a log file, and is stopped with a signal, a
grace period and then SIGKILL. Servers also ask for a parent-death signal, so they do not
outlive a killed test run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from signal import SIGKILL, SIGTERM
from typing import IO, Any

__all__ = ["ROOT", "Proc", "clean_env", "tail"]

#: The project root: the working directory of bulkio's processes.
ROOT = Path(__file__).resolve().parents[2]

try:  # Linux: let children die with the thread that started them (pytest's main thread).
    _LIBC: Any = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    _PRCTL = _LIBC.prctl if _LIBC is not None else None
except (OSError, AttributeError):
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _child_setup(death_signal: int | None) -> Callable[[], None] | None:
    if _PRCTL is None or death_signal is None:
        return None
    prctl = _PRCTL

    def setup() -> None:  # runs in the child after fork (and after setuid), before exec
        prctl(_PR_SET_PDEATHSIG, death_signal)

    return setup


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without libpq/PostgreSQL variables (``PG*``), plus ``extra``:
    the caller's PGHOST or PGDATA must not leak into a throwaway server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra or {})
    return env


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file ("" when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Proc:
    """A child process with its stdout and stderr appended to ``log``.

    ``env`` is its whole environment (default: :func:`clean_env`). Signals go to its process
    group (``signal_group``: granian forks its workers; a server's children are its own business,
    so servers signal the process alone). ``death_signal`` (Linux) is sent to the child when the
    thread that started it ends; ``user`` runs it as another system user (PostgreSQL as root).
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        log: Path,
        *,
        cwd: Path | None = ROOT,
        user: pwd.struct_passwd | None = None,
        death_signal: int | None = None,
        signal_group: bool = True,
    ) -> None:
        self.log = log
        self.signal_group = signal_group
        self._fh: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in stop()
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=self._fh,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else clean_env(),
                start_new_session=True,
                preexec_fn=_child_setup(death_signal),
                **kwargs,
            )
        except BaseException:
            self._fh.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` (to the process group, or the process alone: ``signal_group``)."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            if self.signal_group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if the process still runs after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = SIGTERM, timeout: float = 20.0) -> int | None:
        """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; close the log. Returns
        the exit status (stopping a stopped process again does nothing)."""
        if self._fh.closed:
            return self.proc.returncode
        if self.alive():
            self.signal(sig)
            if self.wait(timeout) is None:
                self.signal(SIGKILL)
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log."""
        return tail(self.log, lines)
