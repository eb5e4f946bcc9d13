"""Throwaway PostgreSQL, Redis and S3 (moto) servers for tests and benchmarks.

Every server runs as a child process on a free 127.0.0.1 port with its files in a fresh temporary
directory, and is stopped (and its directory deleted) by ``stop()`` / the context manager / the
fixtures' teardown. Nothing here needs Docker or a pre-installed service, so tests never skip for
want of a server: ``.ci/setup.sh`` installs the binaries.

The classes do not depend on pytest::

    with PostgresServer() as pg, RedisServer() as redis, S3Server() as s3:
        url = pg.create_database()           # postgresql://postgres@127.0.0.1:PORT/t_...

The fixtures at the bottom (``pg_server``, ``redis_server``, ``s3_server`` per session and
``fresh_database`` per test) are imported by ``tests/conftest.py``.

PostgreSQL refuses to run as root; when the tests run as root (CI containers), ``initdb`` and the
server run as the ``postgres`` system user (or a ``bulkio`` system user created on demand). The
servers are started in their own session (Ctrl-C reaches pytest, which stops them cleanly) and
with a parent-death signal, so they do not outlive a killed test run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.processes import Proc, clean_env, tail
from tests.support.waits import WaitTimeout, wait_until

__all__ = [
    "PostgresServer",
    "RedisServer",
    "S3Server",
    "ServerError",
    "find_pg_bindir",
    "free_port",
]

LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """A throwaway server could not be started (the message includes the end of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _server(death_signal: int = signal.SIGTERM) -> dict[str, Any]:
    """How servers run: signalled alone (not their children), and ended by ``death_signal``
    when pytest's main thread ends without stopping them."""
    return {"death_signal": death_signal, "signal_group": False}


def _failure(proc: Proc, what: str) -> ServerError:
    return ServerError(f"{what}; end of {proc.log}:\n{tail(proc.log, 40) or '(no log)'}")


def _wait_ready(check: Callable[[], bool], proc: Proc, what: str, timeout: float = 60.0) -> None:
    """Until ``check()``; a ServerError with the end of the log if the process exits first or
    ``timeout`` passes (then it is killed)."""

    def ready() -> bool:
        if check():
            return True
        if not proc.alive():
            raise _failure(proc, f"{what} exited with status {proc.returncode} while starting")
        return False

    try:
        wait_until(ready, timeout, 0.02, what)
    except WaitTimeout:
        proc.stop(signal.SIGKILL)
        raise _failure(proc, f"{what} not ready after {timeout:.0f}s") from None


def _rmtree(path: Path | None) -> None:
    if path is not None and os.environ.get("BULKIO_TEST_KEEP_SERVER_DIRS") != "1":
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------ PostgreSQL


def find_pg_bindir() -> Path:
    """Directory of ``initdb``/``postgres``: $BULKIO_PG_BINDIR, ``pg_config --bindir``, the
    highest /usr/lib/postgresql/*/bin, or ``initdb`` on PATH."""
    candidates: list[Path] = []
    if os.environ.get("BULKIO_PG_BINDIR"):
        candidates.append(Path(os.environ["BULKIO_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))

    def version_key(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version_key, reverse=True)
    candidates.extend(Path(p).parent for p in debian)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise ServerError(
        "PostgreSQL server binaries (initdb, postgres) not found: run .ci/setup.sh "
        "or set BULKIO_PG_BINDIR"
    )


def _postgres_os_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "bulkio"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "bulkio"],
        check=True, capture_output=True,
    )  # fmt: skip
    return pwd.getpwnam("bulkio")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Server:
    """What the three servers share: a child process, a temporary directory, a context manager.
    Subclasses set ``_proc``/``base_dir`` in ``start()`` and how to stop the process."""

    _proc: Proc | None
    base_dir: Path | None
    #: Signal and grace period of stop(); SIGKILL where there is nothing to save.
    _stop_signal: int = signal.SIGTERM
    _stop_timeout: float = 30.0

    def start(self) -> Any:
        raise NotImplementedError

    def _launch(
        self,
        proc: Proc,
        ready: Callable[[], bool],
        what: str,
        *,
        timeout: float = 60.0,
        kill_signal: int = signal.SIGKILL,
    ) -> None:
        """Own ``proc`` and wait until ``ready()``; on failure stop it with ``kill_signal``."""
        self._proc = proc
        try:
            _wait_ready(ready, proc, what, timeout=timeout)
        except ServerError:
            proc.stop(kill_signal)
            self._proc = None
            raise

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop(self._stop_signal, timeout=self._stop_timeout)
            self._proc = None
        _rmtree(self.base_dir)
        self.base_dir = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class PostgresServer(_Server):
    """A private PostgreSQL cluster (``initdb`` into a temporary directory).

    Tuned for tests, not durability (``fsync=off`` etc.): never point it at data you want to keep.
    The superuser is ``postgres`` with trust authentication on 127.0.0.1.
    """

    #: Settings of the throwaway cluster; ``settings=`` overrides/extends them.
    DEFAULT_SETTINGS: Mapping[str, str] = {
        "max_connections": "200",
        "shared_buffers": "256MB",
        "work_mem": "16MB",
        "maintenance_work_mem": "256MB",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "30min",
        "jit": "off",
        "log_min_messages": "warning",
        "log_min_error_statement": "panic",
        "timezone": "UTC",
    }

    def __init__(
        self,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        bindir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = LOOPBACK
        self.port = port or 0
        self.superuser = "postgres"
        self.settings = {**self.DEFAULT_SETTINGS, **(settings or {})}
        self._base_parent = base_dir
        self._bindir = Path(bindir) if bindir else None
        self.base_dir: Path | None = None
        self._proc: Proc | None = None

    # -- lifecycle

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_pg_bindir()
        return self._bindir

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None, "server not started"
        return self.base_dir / "data"

    def start(self) -> PostgresServer:
        if self._proc is not None:
            return self
        user = _postgres_os_user()
        self.base_dir = Path(tempfile.mkdtemp(prefix="bulkio-pg-", dir=self._base_parent))
        try:
            os.chmod(self.base_dir, 0o700)
            if user is not None:
                os.chown(self.base_dir, user.pw_uid, user.pw_gid)
            self._initdb(user)
            fixed_port = self.port
            for attempt in range(5):
                self.port = fixed_port or free_port()
                try:
                    self._start_postmaster(user)
                    break
                except ServerError:
                    if fixed_port or attempt == 4 or _port_open(self.port) is False:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _run_as(self, user: pwd.struct_passwd | None, argv: Sequence[str]) -> None:
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        done = subprocess.run(
            list(argv), cwd=self.base_dir, env=clean_env(), capture_output=True, text=True,
            timeout=300, **kwargs,
        )  # fmt: skip
        if done.returncode != 0:
            raise ServerError(
                f"{argv[0]} failed with status {done.returncode}:\n{done.stdout}{done.stderr}"
            )

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        self._run_as(
            user,
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
             "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
        )  # fmt: skip
        with open(self.data_dir / "pg_hba.conf", "w") as hba:
            hba.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        if user is not None:
            os.chown(self.data_dir / "pg_hba.conf", user.pw_uid, user.pw_gid)

    def _start_postmaster(self, user: pwd.struct_passwd | None) -> None:
        assert self.base_dir is not None
        conf = {
            **self.settings,
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.base_dir),
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in conf.items():
            argv += ["-c", f"{key}={value}"]
        log = self.base_dir / "postgresql.log"
        # SIGQUIT = immediate shutdown if pytest dies without stopping us.
        proc = Proc(argv, clean_env(), log, cwd=self.base_dir, user=user, **_server(signal.SIGQUIT))
        self._launch(proc, self._ready, "postgres", kill_signal=signal.SIGQUIT)

    def _ready(self) -> bool:
        # postmaster.pid line 8 says "ready" once connections are accepted (PostgreSQL >= 10).
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and _port_open(self.port)

    #: SIGINT = fast shutdown (no checkpoint wait for sessions to end).
    _stop_signal = signal.SIGINT

    def __enter__(self) -> PostgresServer:
        return self.start()

    # -- URLs and databases

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{dbname}"

    @property
    def dsn(self) -> str:
        return self.url()

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as superuser in autocommit mode; return its rows (if any)."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None, *, template: str = "template0") -> str:
        """CREATE DATABASE (a new, empty one by default) and return its URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self.execute(f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template)}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE, disconnecting whoever is still connected."""
        self.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def env(self, dbname: str = "postgres") -> dict[str, str]:
        return {"BULKIO_DATABASE_URL": self.url(dbname)}


# ----------------------------------------------------------------------------------------- Redis


def _redis_command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """Send one command in RESP and return the raw first reply line (no client library)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


class RedisServer(_Server):
    """A private ``redis-server`` (no persistence unless :meth:`restart` is asked to keep data)."""

    def __init__(
        self,
        *,
        port: int | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
    ) -> None:
        self.host = LOOPBACK
        self.port = port or 0
        self._fixed_port = bool(port)
        self._base_parent = base_dir
        self._binary = binary
        self.base_dir: Path | None = None
        self._proc: Proc | None = None

    @property
    def binary(self) -> str:
        found = self._binary or shutil.which("redis-server")
        if not found:
            raise ServerError("redis-server not found: run .ci/setup.sh")
        return found

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def env(self, db: int = 0) -> dict[str, str]:
        return {"BULKIO_REDIS_URL": self.url(db)}

    def start(self) -> RedisServer:
        if self._proc is not None:
            return self
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="bulkio-redis-", dir=self._base_parent))
        try:
            for attempt in range(5):
                if not self._fixed_port and (attempt or not self.port):
                    self.port = free_port()
                try:
                    self._spawn()
                    break
                except ServerError:
                    if self._fixed_port or attempt == 4:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        assert self.base_dir is not None
        argv = [
            self.binary,
            "--bind", self.host, "--port", str(self.port),
            "--dir", str(self.base_dir), "--dbfilename", "dump.rdb",
            "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        proc = Proc(argv, clean_env(), self.base_dir / "redis.log", cwd=self.base_dir, **_server())
        self._launch(proc, self.ping, "redis-server", timeout=30)

    def ping(self) -> bool:
        try:
            return _redis_command(self.port, "PING", timeout=1) == b"+PONG"
        except OSError:
            return False

    def flush(self) -> None:
        """FLUSHALL: empty every database without restarting."""
        _redis_command(self.port, "FLUSHALL")

    def restart(self, empty: bool = True) -> None:
        """Stop and start again on the same port.

        ``empty=True`` loses every key (like a Redis without persistence that crashed);
        ``empty=False`` saves a snapshot at shutdown and loads it again.
        """
        if self._proc is not None:
            if empty:
                self._proc.stop(signal.SIGKILL)
            else:
                with contextlib.suppress(OSError):
                    _redis_command(self.port, "SHUTDOWN", "SAVE", timeout=30)
                self._proc.stop(signal.SIGTERM, timeout=30)
            self._proc = None
        if empty and self.base_dir is not None:
            (self.base_dir / "dump.rdb").unlink(missing_ok=True)
            shutil.rmtree(self.base_dir / "appendonlydir", ignore_errors=True)
        fixed, self._fixed_port = self._fixed_port, True  # same port: clients reconnect to it
        try:
            self.start()
        finally:
            self._fixed_port = fixed

    _stop_signal = signal.SIGKILL  # throwaway data: nothing to save

    def __enter__(self) -> RedisServer:
        return self.start()


# -------------------------------------------------------------------------------- S3 (moto)


class S3Server(_Server):
    """moto's S3 in server mode (a ``python -m moto.server`` subprocess), with one bucket."""

    def __init__(
        self,
        *,
        port: int | None = None,
        bucket: str = "bulkio-test",
        region: str = "us-east-1",
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = LOOPBACK
        self.port = port or 0
        self.bucket = bucket
        self.region = region
        self.access_key_id = "testing"
        self.secret_access_key = "testing"
        self._base_parent = base_dir
        self.base_dir: Path | None = None
        self._proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def storage_url(self) -> str:
        return f"s3://{self.bucket}"

    def env(self) -> dict[str, str]:
        """The BULKIO_* settings that point the application at this server."""
        return {
            "BULKIO_STORAGE_URL": self.storage_url,
            "BULKIO_S3_ENDPOINT": self.endpoint,
            "BULKIO_S3_REGION": self.region,
            "BULKIO_S3_ACCESS_KEY_ID": self.access_key_id,
            "BULKIO_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing, SigV4)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def start(self) -> S3Server:
        if self._proc is not None:
            return self
        self.base_dir = Path(tempfile.mkdtemp(prefix="bulkio-s3-", dir=self._base_parent))
        fixed = bool(self.port)
        try:
            for attempt in range(5):
                if not fixed:
                    self.port = free_port()
                try:
                    self._spawn()
                    break
                except ServerError:
                    if fixed or attempt == 4:
                        raise
            self.create_bucket()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        assert self.base_dir is not None
        argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        env = clean_env(
            {
                "AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_DEFAULT_REGION": self.region,
                "PYTHONWARNINGS": "ignore",
            }
        )
        proc = Proc(argv, env, self.base_dir / "moto.log", cwd=self.base_dir, **_server())
        self._launch(proc, self._ready, "moto server", timeout=60)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def create_bucket(self, name: str | None = None) -> str:
        name = name or self.bucket
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API), then recreate the bucket."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass
        self.create_bucket()

    _stop_timeout = 10.0

    def __enter__(self) -> S3Server:
        return self.start()


# -------------------------------------------------------------------------------- pytest fixtures

try:
    import pytest
except ImportError:  # the classes above work without pytest
    pass
else:
    __all__ += ["fresh_database", "pg_server", "redis_server", "s3_server"]

    @pytest.fixture(scope="session")
    def pg_server() -> Iterator[PostgresServer]:
        """A PostgreSQL cluster for the whole session (superuser URL: ``pg_server.url()``)."""
        with PostgresServer() as server:
            yield server

    @pytest.fixture(scope="session")
    def redis_server() -> Iterator[RedisServer]:
        """A Redis for the whole session; ``redis_server.restart(empty=True)`` loses every key."""
        with RedisServer() as server:
            yield server

    @pytest.fixture(scope="session")
    def s3_server() -> Iterator[S3Server]:
        """moto S3 for the whole session with bucket ``s3_server.bucket``."""
        with S3Server() as server:
            yield server

    @pytest.fixture
    def fresh_database(pg_server: PostgresServer) -> Iterator[str]:
        """URL of a new, empty database (dropped after the test)."""
        url = pg_server.create_database()
        yield url
        pg_server.drop_database(url.rsplit("/", 1)[1])
