"""Webhook signatures, secrets, payload and retry timing (engine/webhooks.py,
engine/webhook_delivery.py), checked against the Standard Webhooks reference library."""

from __future__ import annotations

import base64
import json
import random
import time
from datetime import UTC, datetime
from typing import get_args

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from api.schemas import WebhookEventType
from engine import webhooks
from engine.settings import Settings, SettingsError, load_settings
from engine.webhook_delivery import Outcome, next_wait, retry_after, retry_delays

DATA = {
    "processed": 10,
    "successful": 8,
    "failed": 2,
    "error_count": 3,
    "inserted": 5,
    "updated": 3,
    "bytes_read": 999,
    "total_bytes": 999,
    "rows_per_sec": 12.5,
    "status": "completed",
    "total_records": 10,
    "duration_ms": 800,
    "job_id": "5b0c7f6e-1b1e-4c9e-9d3b-7f1f8a6c2e11",
    "kind": "import",
    "resource": "users",
    "format": "csv",
    "mode": "upsert",
}


def test_a_secret_is_whsec_and_base64_of_32_random_bytes() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert secret != webhooks.new_secret()


def _headers(keys: list[str], msg_id: str, body: bytes, stamp: int) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": webhooks.signature_header(keys, msg_id, stamp, body),
    }


def test_the_reference_library_verifies_our_signature() -> None:
    secret = webhooks.new_secret()
    body = webhooks.payload("import.completed", DATA, datetime.now(UTC), "https://api.test")
    headers = _headers([secret], "msg_" + "a" * 32, body, int(time.time()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers)["type"] == "import.completed"
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # the body is signed
        Webhook(secret).verify(body.replace(b"completed", b"failed"), headers)
    tampered = {**headers, "webhook-id": "msg_" + "b" * 32}
    with pytest.raises(WebhookVerificationError):  # so is the id
        Webhook(secret).verify(body, tampered)


def test_during_a_rotation_both_secrets_sign_and_either_verifies() -> None:
    new, old = webhooks.new_secret(), webhooks.new_secret()
    body = b'{"type":"export.failed"}'
    headers = _headers([new, old], "msg_" + "c" * 32, body, int(time.time()))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)


def test_the_payload_is_thin_ordered_and_links_to_the_api() -> None:
    at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    body = webhooks.payload("import.completed", DATA, at, "https://bulkio.test")
    assert body == webhooks.payload(
        "import.completed", dict(reversed(DATA.items())), at, "https://bulkio.test"
    )
    got = json.loads(body)
    assert list(got) == ["type", "timestamp", "data"]
    assert got["timestamp"] == "2026-03-01T12:00:00.123456Z"
    data = got["data"]
    job = DATA["job_id"]
    assert data["links"] == {
        "job": f"https://bulkio.test/v1/jobs/{job}",
        "events": f"https://bulkio.test/v1/jobs/{job}/events",
        "errors": f"https://bulkio.test/v1/imports/{job}/errors",
    }
    assert {k: data[k] for k in ("job_id", "status", "processed", "successful", "failed")} == {
        "job_id": job,
        "status": "completed",
        "processed": 10,
        "successful": 8,
        "failed": 2,
    }
    assert "rows_per_sec" not in data and "download_url" not in json.dumps(got)
    export = webhooks.payload("export.completed", {**DATA, "kind": "export"}, at, "https://b.test")
    assert "errors" not in json.loads(export)["data"]["links"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("999999999", 86_400.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC).timestamp()
    assert retry_after(value, now) == expected


def _failed(status: int | None, after: float | None = None) -> Outcome:
    return Outcome(datetime.now(UTC), 5, status, "x", after)


def test_the_default_schedule_is_the_specs_with_bounded_jitter() -> None:
    delays = retry_delays(Settings())
    assert delays == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    rng = random.Random(7)
    for tries, delay in enumerate(delays[1:], start=1):
        waits = {next_wait(tries, delays, _failed(500), rng) for _ in range(50)}
        assert all(w is not None and 0.9 * delay <= w <= 1.1 * delay for w in waits)
        assert len(waits) > 1  # jittered
    assert next_wait(len(delays), delays, _failed(500), rng) is None  # bounded


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_wait_at_least_retry_after(status: int) -> None:
    rng = random.Random(1)
    assert next_wait(1, (0, 1, 1), _failed(status, 30.0), rng) == 30.0
    assert 0.9 <= (next_wait(1, (0, 1, 1), _failed(500, 30.0), rng) or 0) <= 1.1  # not for 500
    assert (next_wait(1, (0, 100), _failed(status, 3.0), rng) or 0) >= 90  # never shorter


def test_the_schedule_setting_is_checked() -> None:
    assert load_settings({"BULKIO_WEBHOOK_RETRY_SCHEDULE": "0, 1,2"}).webhook_retry_schedule == (
        "0",
        "1",
        "2",
    )
    for bad in ("0,-1", "0,x", "0,1.5", "0," + ",".join(["1"] * 30), "0,999999999"):
        with pytest.raises(SettingsError, match="BULKIO_WEBHOOK_RETRY_SCHEDULE"):
            load_settings({"BULKIO_WEBHOOK_RETRY_SCHEDULE": bad})


@pytest.mark.parametrize(
    ("types", "ok"),
    [
        (["import.completed"], True),
        (["import.failed", "export.completed", "import.failed"], True),
        ([], False),
        (["import.started"], False),
        (["Import.Completed"], False),
    ],
)
def test_event_types_are_validated(types: list[str], ok: bool) -> None:
    if ok:
        assert webhooks.check_event_types(types) == list(dict.fromkeys(types))
    else:
        with pytest.raises(webhooks.EndpointRefused) as caught:
            webhooks.check_event_types(types)
        assert caught.value.code == "event_types"


def test_the_api_schema_lists_the_engines_event_types() -> None:
    assert get_args(WebhookEventType) == webhooks.EVENT_TYPES
