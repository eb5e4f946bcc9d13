"""engine.db.conninfo: connections are named and carry the idle-in-transaction timeout."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from engine.db import conninfo, idle_in_transaction_ms

URL = "postgresql://bulkio:secret@127.0.0.1:54329/bulkio"


def test_a_connection_is_named_and_keeps_the_urls_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGAPPNAME", raising=False)
    params = conninfo_to_dict(conninfo(URL, "bulkio-worker"))
    assert params == {
        "user": "bulkio",
        "password": "secret",
        "host": "127.0.0.1",
        "port": "54329",
        "dbname": "bulkio",
        "application_name": "bulkio-worker",
    }


def test_a_name_given_in_the_url_or_pgappname_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGAPPNAME", raising=False)
    params = conninfo_to_dict(conninfo(URL + "?application_name=ops-choice", "bulkio-worker"))
    assert params["application_name"] == "ops-choice"
    monkeypatch.setenv("PGAPPNAME", "from-env")
    assert conninfo_to_dict(conninfo(URL, "bulkio-worker"))["application_name"] == "from-env"


def test_the_idle_timeout_is_appended_to_options_already_in_the_url() -> None:
    url = URL + "?options=-c%20search_path%3Dbulk"
    params = conninfo_to_dict(conninfo(url, "bulkio-locker", idle_in_transaction_ms(60)))
    assert params["options"] == "-c search_path=bulk -c idle_in_transaction_session_timeout=30000"
    assert "options" not in conninfo_to_dict(conninfo(URL, "bulkio-api"))


def test_the_idle_timeout_is_half_the_lease_and_at_least_a_second() -> None:
    assert idle_in_transaction_ms(60) == 30_000
    assert idle_in_transaction_ms(1) == 1_000
