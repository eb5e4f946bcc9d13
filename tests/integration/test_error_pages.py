"""``GET /v1/imports/{id}/errors/page`` and ``/summary`` (the web page's error table): pages in
the report's order that together are the report, filters by field and code, the next link,
counts by (field, code), parameter errors and owner isolation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.datafiles import make
from tests.support.service import Bulkio, make_token

pytestmark = pytest.mark.integration


@pytest.fixture
def job(service: Bulkio, datadir: Path) -> dict[str, Any]:
    """A finished users import with ~150 error rows, record-level ones among them."""
    path, _ = make(datadir, "users", "csv", 3000, seed=41, defect_rate=0.05)
    return service.import_file(path, "users")


def report(service: Bulkio, job_id: str) -> list[dict[str, Any]]:
    res = service.error_report(job_id)
    assert res.status_code == 200, res.text
    return [json.loads(line) for line in res.text.splitlines() if line]


def pages(client: httpx.Client, job_id: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page, following ``next``."""
    got = []
    url: str | None = f"/v1/imports/{job_id}/errors/page"
    query: dict[str, Any] | None = params
    while url is not None:
        res = client.get(url, params=query)
        assert res.status_code == 200, res.text
        body = res.json()
        got.append(body["errors"])
        url, query = body["next"], None
    return got


def test_the_pages_together_are_the_report_in_its_order(
    service: Bulkio, job: dict[str, Any]
) -> None:
    whole = report(service, job["job_id"])
    assert len(whole) > 100 and any(e["field"] is None for e in whole)
    got = pages(service.client, job["job_id"], limit=7)
    assert all(len(p) == 7 for p in got[:-1]) and 0 < len(got[-1]) <= 7
    assert [e for p in got for e in p] == whole
    # default page size
    first = service.client.get(f"/v1/imports/{job['job_id']}/errors/page").json()
    assert first["errors"] == whole[:50]
    assert first["next"].startswith(f"{service.env['BULKIO_PUBLIC_URL']}/v1/imports/")


def test_the_last_page_has_no_next_even_when_it_is_full(
    service: Bulkio, job: dict[str, Any]
) -> None:
    total = len(report(service, job["job_id"]))
    got = pages(service.client, job["job_id"], limit=total)
    assert [len(p) for p in got] == [total]


@pytest.mark.parametrize(
    "params",
    [{"field": "email"}, {"code": "invalid_format"}, {"field": "email", "code": "invalid_format"}],
)
def test_filters_keep_the_order_and_the_next_link_keeps_the_filters(
    service: Bulkio, job: dict[str, Any], params: dict[str, str]
) -> None:
    wanted = [
        e for e in report(service, job["job_id"]) if all(e[k] == v for k, v in params.items())
    ]
    assert len(wanted) > 3
    assert [e for p in pages(service.client, job["job_id"], limit=3, **params) for e in p] == (
        wanted
    )


def test_a_page_can_start_anywhere(service: Bulkio, job: dict[str, Any]) -> None:
    """after_row/after_field/after_code name a place, whether or not such a row exists."""
    whole = report(service, job["job_id"])
    record = next(e for e in whole if e["field"] is None)
    path = f"/v1/imports/{job['job_id']}/errors/page"

    def after(**params: Any) -> list[dict[str, Any]]:
        res = service.client.get(path, params={"limit": 500, **params})
        assert res.status_code == 200, res.text
        return res.json()["errors"]  # type: ignore[no-any-return]

    # after a record-level error: the next rows (its row has no other errors)
    i = whole.index(record)
    assert after(after_row=record["row"], after_code=record["code"]) == whole[i + 1 :]
    # after_row alone: from the first error of the next row on ("" field, "" code sort first)
    row = whole[10]["row"]
    assert after(after_row=row - 1) == [e for e in whole if e["row"] >= row]
    assert after(after_row=row, after_field="zzz") == [e for e in whole if e["row"] > row]
    assert after(after_row=2**63 - 1) == []
    # after_field / after_code without after_row: from the start
    assert after(after_field="zzz", after_code="zzz") == whole


def test_the_summary_counts_the_stored_rows_by_field_and_code(
    service: Bulkio, job: dict[str, Any]
) -> None:
    whole = report(service, job["job_id"])
    res = service.client.get(f"/v1/imports/{job['job_id']}/errors/summary")
    assert res.status_code == 200, res.text
    body = res.json()
    assert {(c["field"], c["code"]): c["count"] for c in body["counts"]} == Counter(
        (e["field"], e["code"]) for e in whole
    )
    counts = [c["count"] for c in body["counts"]]
    assert counts == sorted(counts, reverse=True)
    assert body["stored_errors"] == body["error_count"] == len(whole) == job["error_count"]
    assert body["errors_truncated"] is False


def test_a_job_without_errors_has_an_empty_page_and_summary(service: Bulkio, datadir: Path) -> None:
    path, _ = make(datadir, "users", "csv", 50, seed=42, defect_rate=0.0)
    job = service.import_file(path, "users")
    page = service.client.get(f"/v1/imports/{job['job_id']}/errors/page").json()
    assert page == {"errors": [], "next": None}
    summary = service.client.get(f"/v1/imports/{job['job_id']}/errors/summary").json()
    assert summary["counts"] == [] and summary["stored_errors"] == 0


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"after_row": "-1"}, "after_row"),
        ({"after_row": "1e3"}, "after_row"),
        ({"after_row": str(2**63)}, "after_row"),
        ({"field": "a\x00b"}, "field"),
        ({"code": "c" * 201}, "code"),
        ({"after_row": "1", "after_field": "\x00"}, "after_field"),
        ({"cursor": "abc"}, "cursor"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    service: Bulkio, job: dict[str, Any], params: dict[str, str], named: str
) -> None:
    res = service.client.get(f"/v1/imports/{job['job_id']}/errors/page", params=params)
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert named in res.json()["detail"]


def test_other_owners_exports_and_unknown_jobs_are_404_and_scopes_apply(
    service: Bulkio, job: dict[str, Any]
) -> None:
    url = service.env["BULKIO_DATABASE_URL"]
    routes = [f"/v1/imports/{job['job_id']}/errors/{name}" for name in ("page", "summary")]
    stranger = service.client_for(make_token(url, "someone-else", ["imports:read"]))
    exports_only = service.client_for(make_token(url, "tester", ["exports:read"]))
    anonymous = service.client_for(None)
    export = service.client.post("/v1/exports", json={"resource": "users"}).json()
    for route in routes:
        assert stranger.get(route).status_code == 404
        assert exports_only.get(route).status_code == 403
        assert anonymous.get(route).status_code == 401
        other = route.replace(job["job_id"], export["job_id"])
        assert service.client.get(other).status_code == 404
        assert service.client.get(route.replace(job["job_id"], "nope")).status_code == 404
