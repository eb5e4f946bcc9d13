"""/metrics aggregates worker processes' counters and live job/queue gauges."""

from __future__ import annotations

import re

import pytest

from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

USERS = (
    b"id,email,name,role,created_at\n"
    b"11111111-1111-4111-8111-111111111111,a@example.com,A,admin,2024-01-01T00:00:00Z\n"
    b"22222222-2222-4222-8222-222222222222,bad-email,B,admin,2024-01-01T00:00:00Z\n"
)


def value(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_rows_jobs_and_queue(service: Bulkio) -> None:
    before = service.client.get("/metrics").text
    job = service.wait(service.upload(None, "users", data=USERS, filename="u.csv").json()["job_id"])
    assert job["status"] == "completed"
    res = service.client_for(None).get("/metrics")
    assert res.status_code == 200
    text = res.text
    name = 'resource="users"'
    assert (
        value(text, "bulkio_rows_imported_total", name)
        - value(before, "bulkio_rows_imported_total", name)
        == 1
    )
    assert (
        value(text, "bulkio_rows_rejected_total", name)
        - value(before, "bulkio_rows_rejected_total", name)
        == 1
    )
    assert value(text, "bulkio_batch_seconds_count", name) >= 1
    assert value(text, "bulkio_jobs", 'kind="import",status="completed"') == 1
    assert "bulkio_queue_depth" in text
    assert "Bearer" not in text and "bk_" not in text
