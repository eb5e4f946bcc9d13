"""Settings are checked at start: a wrong ``BULKIO_*`` value names the variable and its range."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Annotated, get_args, get_origin, get_type_hints

import pytest

from engine import cli
from engine import settings as settings_module
from engine.settings import (
    SCRIPT_VARIABLES,
    SECRET,
    Range,
    Settings,
    SettingsError,
    load_settings,
    unknown_variables,
    warn_unknown,
)
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

BAD = [
    # (variable, value, words the message must hold)
    ("BULKIO_BATCH_ROWS", "0", "BULKIO_BATCH_ROWS=0: must be an integer from 1 to 10000000"),
    ("BULKIO_BATCH_ROWS", "-5", "BULKIO_BATCH_ROWS=-5: must be an integer from 1"),
    ("BULKIO_BATCH_ROWS", "ten", "BULKIO_BATCH_ROWS='ten': must be an integer from 1 to"),
    ("BULKIO_BATCH_ROWS", "1.5", "BULKIO_BATCH_ROWS='1.5': must be an integer"),
    ("BULKIO_BATCH_BYTES", "0", "BULKIO_BATCH_BYTES=0: must be an integer from 1024"),
    ("BULKIO_MAX_UPLOAD_BYTES", "0", "BULKIO_MAX_UPLOAD_BYTES=0: must be an integer of at least 1"),
    ("BULKIO_MAX_DECOMPRESSED_BYTES", "-1", "BULKIO_MAX_DECOMPRESSED_BYTES=-1: must be"),
    ("BULKIO_MAX_RECORD_BYTES", "0", "BULKIO_MAX_RECORD_BYTES=0: must be an integer from 64"),
    ("BULKIO_LEASE_SECONDS", "0", "BULKIO_LEASE_SECONDS=0: must be an integer from 2 to 86400"),
    ("BULKIO_LEASE_SECONDS", "1", "BULKIO_LEASE_SECONDS=1: must be an integer from 2"),
    ("BULKIO_RECONCILE_SECONDS", "0", "BULKIO_RECONCILE_SECONDS=0: must be an integer from 1"),
    ("BULKIO_REQUEUE_AFTER_SECONDS", "-3", "BULKIO_REQUEUE_AFTER_SECONDS=-3: must be"),
    ("BULKIO_MAX_ATTEMPTS", "0", "BULKIO_MAX_ATTEMPTS=0: must be an integer from 1 to 100"),
    ("BULKIO_RETENTION_DAYS", "-1", "BULKIO_RETENTION_DAYS=-1: must be an integer from 0"),
    ("BULKIO_INLINE_ERRORS", "-1", "BULKIO_INLINE_ERRORS=-1: must be an integer from 0 to 1000"),
    ("BULKIO_DOWNLOAD_URL_TTL_SECONDS", "0", "BULKIO_DOWNLOAD_URL_TTL_SECONDS=0: must be"),
    ("BULKIO_DOWNLOAD_URL_TTL_SECONDS", "604801", "from 1 to 604800"),
    ("BULKIO_RATE_LIMIT_PER_MINUTE", "-1", "BULKIO_RATE_LIMIT_PER_MINUTE=-1: must be"),
    ("BULKIO_MAX_RUNNING_JOBS", "0", "BULKIO_MAX_RUNNING_JOBS=0: must be an integer from 1"),
    (
        "BULKIO_CSV_FORMULA_GUARD",
        "maybe",
        "BULKIO_CSV_FORMULA_GUARD='maybe': must be true or false",
    ),
    ("BULKIO_LOG_LEVEL", "verbose", "BULKIO_LOG_LEVEL='verbose': must be one of DEBUG, INFO"),
    ("BULKIO_REFERENCE_CHECKS", "sometimes", "BULKIO_REFERENCE_CHECKS='sometimes': must be one of"),
    ("BULKIO_DATABASE_URL", "mysql://u:p@h/db", "BULKIO_DATABASE_URL: must be a URL starting with"),
    ("BULKIO_DATABASE_URL", "host=h dbname=d", "(got no scheme)"),
    ("BULKIO_REDIS_URL", "http://127.0.0.1:6379", "redis://, rediss:// or unix:// (got http://)"),
    ("BULKIO_PUBLIC_URL", "ftp://example.com", "BULKIO_PUBLIC_URL: must be a URL starting with"),
    ("BULKIO_PUBLIC_URL", "http://", "BULKIO_PUBLIC_URL: must name a host"),
    ("BULKIO_PUBLIC_URL", "https://example.com/", "BULKIO_PUBLIC_URL: must not end with /"),
    ("BULKIO_S3_ENDPOINT", "127.0.0.1:9000", "BULKIO_S3_ENDPOINT: must be a URL starting with"),
    ("BULKIO_STORAGE_URL", "gs://bucket", "file://, s3:// or memory:// (or empty) (got gs://)"),
    ("BULKIO_STORAGE_URL", "file://relative/dir", "must be file:///ABSOLUTE/DIR"),
    ("BULKIO_STORAGE_URL", "s3:///prefix", "BULKIO_STORAGE_URL: must name a bucket"),
    ("BULKIO_USER_ROLES", ",", "BULKIO_USER_ROLES='': must list at least one value"),
    ("BULKIO_USER_ROLES", "admin,super user", "BULKIO_USER_ROLES='admin,super user': must be"),
    ("BULKIO_QUEUE_NAME", "my queue", "BULKIO_QUEUE_NAME='my queue': must be a non-empty text"),
    ("BULKIO_S3_ACCESS_KEY_ID", "AKIA123", "set both or neither"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_a_wrong_value_names_the_variable_and_what_it_allows(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert message in str(caught.value)
    assert name in caught.value.report()


def test_every_wrong_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {"BULKIO_BATCH_ROWS": "0", "BULKIO_LOG_LEVEL": "loud", "BULKIO_MAX_ATTEMPTS": "x"}
        )
    assert [p.split("=")[0] for p in caught.value.problems] == [
        "BULKIO_MAX_ATTEMPTS",
        "BULKIO_BATCH_ROWS",
        "BULKIO_LOG_LEVEL",
    ]


GOOD = [
    ({}, {}),
    ({"BULKIO_BATCH_ROWS": "1"}, {"batch_rows": 1}),
    ({"BULKIO_BATCH_ROWS": " 50_000 "}, {"batch_rows": 50_000}),
    ({"BULKIO_LOG_LEVEL": "debug"}, {"log_level": "debug"}),
    ({"BULKIO_RETENTION_DAYS": "0"}, {"retention_days": 0}),
    ({"BULKIO_RATE_LIMIT_PER_MINUTE": "0"}, {"rate_limit_per_minute": 0}),
    ({"BULKIO_DATABASE_URL": "postgres:///bulkio"}, {"database_url": "postgres:///bulkio"}),
    ({"BULKIO_REDIS_URL": "rediss://r.example:6380/1"}, {"redis_url": "rediss://r.example:6380/1"}),
    ({"BULKIO_STORAGE_URL": "s3://bucket/pre"}, {"storage_url": "s3://bucket/pre"}),
    ({"BULKIO_STORAGE_URL": "memory://"}, {"storage_url": "memory://"}),
    ({"BULKIO_STORAGE_URL": "file:///srv/objects"}, {"storage_url": "file:///srv/objects"}),
    ({"BULKIO_PUBLIC_URL": "https://h.example/bulkio"}, {"public_url": "https://h.example/bulkio"}),
    ({"BULKIO_CSV_FORMULA_GUARD": "off"}, {"csv_formula_guard": False}),
    ({"BULKIO_USER_ROLES": "a, b"}, {"user_roles": ("a", "b")}),
    ({"BULKIO_METRICS_DIR": "/var/lib/my metrics"}, {"metrics_dir": "/var/lib/my metrics"}),
    ({"BULKIO_BATCH_ROWS": ""}, {"batch_rows": 50_000}),  # empty: the default
]


@pytest.mark.parametrize(("env", "expected"), GOOD)
def test_good_values_load(env: dict[str, str], expected: dict[str, object]) -> None:
    settings = load_settings(env)
    for name, value in expected.items():
        assert getattr(settings, name) == value


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(SettingsError, match="BULKIO_BATCH_ROWS=0: must be"):
        Settings(batch_rows=0)
    with pytest.raises(SettingsError, match="BULKIO_LEASE_SECONDS='60': must be an integer"):
        Settings(lease_seconds="60")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="BULKIO_CSV_FORMULA_GUARD=1: must be true or false"):
        Settings(csv_formula_guard=1)  # type: ignore[arg-type]


def test_an_override_replaces_a_wrong_environment_value() -> None:
    assert load_settings({"BULKIO_BATCH_ROWS": "0"}, batch_rows=7).batch_rows == 7


def test_credentials_are_never_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "BULKIO_DATABASE_URL": "mysql://admin:hunter2@db.internal/x",
                "BULKIO_S3_SECRET_ACCESS_KEY": "s3cr3t-key",
            }
        )
    text = caught.value.report()
    assert "hunter2" not in text and "db.internal" not in text and "s3cr3t-key" not in text
    assert "s3cr3t-key" not in repr(
        Settings(s3_access_key_id="k", s3_secret_access_key="s3cr3t-key")
    )
    assert "abc-signing" not in repr(Settings(signing_secret="abc-signing"))


def test_every_setting_declares_its_allowed_values() -> None:
    """A new int or text setting must carry a constraint (Range, OneOf, Url, Text) or be marked
    SECRET: adding one annotation is what gives it a start-up check."""
    hints = get_type_hints(Settings, include_extras=True)
    for f in fields(Settings):
        hint = hints[f.name]
        if hint is bool:
            continue
        assert get_origin(hint) is Annotated, f"{f.name}: annotate its allowed values"
        base, *extras = get_args(hint)
        assert extras, f.name
        if base is int:
            assert any(isinstance(e, Range) for e in extras), f"{f.name}: needs a Range"
        for extra in extras:
            assert extra == SECRET or hasattr(extra, "problem"), f.name
        # the default itself is allowed
    Settings()


# ------------------------------------------------------------------------ unknown variables


def test_unknown_variables_are_warned_about_once_with_a_suggestion(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "_warned", set())  # as in a fresh process
    env = {
        "BULKIO_BATCH_ROW": "10",  # typo
        "BULKIO_HOST": "0.0.0.0",  # read by the Makefile only
        "BULKIO_BATCH_ROWS": "10",
        "PATH": "/bin",
    }
    assert unknown_variables(env) == ["BULKIO_BATCH_ROW"]
    with caplog.at_level(logging.WARNING, logger="bulkio.settings"):
        warn_unknown(env)
        warn_unknown(env)
    messages = [r.getMessage() for r in caplog.records if r.name == "bulkio.settings"]
    assert messages == [
        "unknown setting BULKIO_BATCH_ROW is ignored; did you mean BULKIO_BATCH_ROWS?"
    ]


def test_script_variables_are_read_by_the_scripts() -> None:
    """Each name the settings ignore is really read by a script, a make target or a test helper."""
    sources = [ROOT / "Makefile", *(ROOT / ".ci").iterdir(), *(ROOT / "tests").rglob("*.py")]
    mine = Path(__file__).resolve()
    text = "\n".join(
        p.read_text(errors="replace") for p in sources if p.is_file() and p.resolve() != mine
    )
    for name in SCRIPT_VARIABLES:
        assert name in text, name


# ------------------------------------------------------------------------ the processes


def test_the_cli_exits_2_with_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BULKIO_BATCH_ROWS", "0")
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "BULKIO_BATCH_ROWS=0: must be an integer from 1 to 10000000" in err


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKIO_")}
    # Nothing listens there: a process that got past its settings could not do anything useful.
    env.update(BULKIO_DATABASE_URL="postgresql://nobody@127.0.0.1:9/none", **extra)
    env["BULKIO_REDIS_URL"] = "redis://127.0.0.1:9/0"
    return env


def test_a_worker_with_batch_rows_0_exits_at_once_with_the_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "worker"],
        env=_env(BULKIO_BATCH_ROWS="0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "BULKIO_BATCH_ROWS=0: must be an integer from 1 to 10000000" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_api_server_stops_with_the_message() -> None:
    granian = str(Path(sys.executable).parent / "granian")
    port = str(free_port())
    done = subprocess.run(
        [granian, "--interface", "asgi", "--port", port, "--factory", "api.app:create_app"],
        env=_env(BULKIO_LEASE_SECONDS="-1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "BULKIO_LEASE_SECONDS=-1: must be an integer from 2 to 86400" in done.stderr
    assert "Traceback" not in done.stderr
