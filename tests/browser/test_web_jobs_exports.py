"""The web page's jobs list and export form in a real browser: a streamed export and an export
job, each downloaded and compared with the API's own export and with the jobs table; the list's
filters and its next pages."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.webpage import NARROW, WIDE, Session
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "samples"


def import_users(client: httpx.Client) -> dict[str, Any]:
    """The users sample (40 records, 10 with defects) imported through the API, finished."""
    path = SAMPLES / "users.csv"
    res = client.post(
        "/v1/imports", data={"resource": "users"}, files={"file": (path.name, path.read_bytes())}
    )
    assert res.status_code == 202, res.text
    return finished(client, res.json()["job_id"])


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def jobs_rows(page: Page) -> list[dict[str, str]]:
    """The jobs table as the page shows it, with each row's job id."""
    return list(
        page.locator("#jobs-table tbody tr").evaluate_all(
            """rows => rows.map(r => ({id: r.dataset.jobId, kind: r.cells[1].textContent,
                resource: r.cells[2].textContent, status: r.cells[3].textContent,
                records: r.cells[4].textContent, rejected: r.cells[5].textContent}))"""
        )
    )


def export_form(page: Page) -> Locator:
    return page.locator("#export")


def test_a_streamed_export_downloads_what_the_api_exports(
    tab: Session, web: Bulkio, token: str, artifacts: Path
) -> None:
    client = web.client_for(token)
    job = import_users(client)
    page = tab.page
    tab.sign_in(token)
    # The jobs table shows the import with its counts.
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
    [row] = jobs_rows(page)
    assert row == {
        "id": job["job_id"],
        "kind": "import",
        "resource": "users",
        "status": "completed",
        "records": str(job["processed"]),
        "rejected": str(job["failed"]),
    }

    # Everything, as NDJSON: one record per accepted row of the import the table shows.
    form = export_form(page)
    form.get_by_label("Resource").select_option("users")
    form.get_by_label("Format").select_option("ndjson")
    with page.expect_download() as download:
        form.get_by_role("button", name="Export").click()
    assert download.value.suggested_filename.endswith(".ndjson")
    saved = artifacts / f"users-all-{download.value.suggested_filename}"
    download.value.save_as(saved)
    direct = client.get("/v1/exports", params={"resource": "users", "format": "ndjson"})
    assert saved.read_bytes() == direct.content
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    assert len(records) == int(row["records"]) - int(row["rejected"]) == job["successful"]
    expect(form.get_by_role("status")).to_have_text(
        f"Export downloaded: {download.value.suggested_filename}."
    )

    # Chosen fields, a filter and gzip: the same bytes as the API's answer to that query.
    form.get_by_label("Format").select_option("csv")
    fields = form.get_by_role("group", name="Fields")
    fields.get_by_label("email", exact=True).check()
    fields.get_by_label("role", exact=True).check()
    form.get_by_text("Filters", exact=True).click()  # the filters are folded away at first
    form.get_by_role("group", name="Filters").get_by_label("role", exact=True).fill("admin")
    form.get_by_label("gzip the file").check()
    with page.expect_download() as download:
        form.get_by_role("button", name="Export").click()
    assert download.value.suggested_filename.endswith(".csv.gz")
    saved = artifacts / download.value.suggested_filename
    download.value.save_as(saved)
    direct = client.get(
        "/v1/exports",
        params={
            "resource": "users",
            "format": "csv",
            "fields": "email,role",
            "role": "admin",
            "compression": "gzip",
        },
    )
    assert direct.status_code == 200, direct.text
    assert saved.read_bytes() == direct.content
    # ... and the admins of the full export, in the same order
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(saved.read_bytes()).decode())))
    admins = [{"email": r["email"], "role": "admin"} for r in records if r["role"] == "admin"]
    assert admins and rows == admins


def test_an_export_job_offers_its_file_and_the_list_filters_by_kind(
    tab: Session, web: Bulkio, token: str, artifacts: Path
) -> None:
    client = web.client_for(token)
    imported = import_users(client)
    page = tab.page
    tab.sign_in(token)
    form = export_form(page)
    form.get_by_label("Resource").select_option("users")
    form.get_by_label("Format").select_option("csv")
    form.get_by_text("Filters", exact=True).click()
    form.get_by_role("group", name="Filters").get_by_label("active", exact=True).fill("true")
    form.get_by_label("Run an export job").check()
    with page.expect_response(lambda r: r.url.endswith("/v1/exports")) as posted:
        form.get_by_role("button", name="Export").click()
    job_id = posted.value.json()["job_id"]
    # followed live in the job panel, then offered as a link in both places
    expect(page.locator("#job-id")).to_have_text(job_id)
    expect(page.locator("#job-status")).to_have_text("Completed.")
    link = form.get_by_role("link", name="Download")
    expect(link).to_be_visible()
    expect(page.locator("#job").get_by_role("link", name="Download")).to_be_visible()
    href = link.get_attribute("href") or ""
    assert href.startswith(f"/v1/downloads/{job_id}?expires=")
    with page.expect_download() as download:
        link.click()
    saved = artifacts / f"job-{download.value.suggested_filename}"
    download.value.save_as(saved)
    direct = client.get(
        "/v1/exports", params={"resource": "users", "format": "csv", "active": "true"}
    )
    assert saved.read_bytes() == direct.content
    # The list shows both jobs; filtered by kind, only the export.
    jobs = page.locator("#jobs")
    expect(jobs.locator("tbody tr")).to_have_count(2)
    assert [r["id"] for r in jobs_rows(page)] == [job_id, imported["job_id"]]
    jobs.get_by_label("Kind").select_option("export")
    jobs.get_by_role("button", name="Show jobs").click()
    expect(jobs.locator("tbody tr")).to_have_count(1)
    assert [(r["id"], r["kind"], r["status"]) for r in jobs_rows(page)] == [
        (job_id, "export", "completed")
    ]
    jobs.get_by_label("Kind").select_option("")
    jobs.get_by_label("Status").select_option("failed")
    jobs.get_by_role("button", name="Show jobs").click()
    expect(jobs.locator("tbody tr")).to_have_count(0)
    # "Show" opens an import again in the job panel, with its error table.
    jobs.get_by_label("Status").select_option("")
    jobs.get_by_role("button", name="Show jobs").click()
    jobs.get_by_role("button", name=f"Show import job {imported['job_id']}").click()
    expect(page.locator("#job-id")).to_have_text(imported["job_id"])
    expect(page.locator("#errors-table tbody tr")).to_have_count(imported["error_count"])


def test_the_jobs_list_pages_with_its_next_link(tab: Session, web: Bulkio, token: str) -> None:
    client = web.client_for(token)
    made = []
    for _ in range(23):  # more than a page of 20
        res = client.post("/v1/exports", json={"resource": "comments", "format": "csv"})
        assert res.status_code == 202, res.text
        made.append(finished(client, res.json()["job_id"])["job_id"])
    page = tab.page
    tab.sign_in(token)
    rows = page.locator("#jobs-table tbody tr")
    expect(rows).to_have_count(20)
    more = page.get_by_role("button", name="Show more jobs")
    more.click()
    expect(rows).to_have_count(23)
    expect(more).to_be_hidden()
    assert [r["id"] for r in jobs_rows(page)] == made[::-1]
    for width in (WIDE, NARROW):
        page.set_viewport_size({"width": width, "height": 900})
        tab.fits()
