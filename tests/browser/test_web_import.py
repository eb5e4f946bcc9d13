"""The web page's import path in a real browser: sign in, upload a file with defects (a real
progress bar), follow the job live through its event stream to the end, then page through and
filter the error table and download the report, each checked against the API's own answers.
Screenshots at 1440 and 360 px go to the artifacts folder (see conftest.py)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Response, expect

from tests.browser.webpage import NARROW, WIDE, Session
from tests.support.datafiles import make
from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

#: With BULKIO_BATCH_ROWS=1000: several progress events; ~5% defects: several error pages.
ROWS = 3000
COLUMNS = ("row", "line", "field", "code", "message", "value")
SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "samples"
#: The README's screenshot; ``BULKIO_TEST_WRITE_DOCS=1`` writes it (commit the result).
DOCS_PICTURE = Path(__file__).resolve().parents[2] / "docs" / "web.png"


def api_report(web: Bulkio, token: str, job_id: str, fmt: str = "ndjson") -> Any:
    res = web.client_for(token).get(f"/v1/imports/{job_id}/errors", params={"format": fmt})
    assert res.status_code == 200, res.text
    return res


def report_rows(web: Bulkio, token: str, job_id: str) -> list[tuple[str, ...]]:
    """The API's report as the table shows it: text cells, "(record)" for no field."""
    lines = api_report(web, token, job_id).text.splitlines()
    return [_cells(json.loads(line)) for line in lines if line]


def _cells(error: dict[str, Any]) -> tuple[str, ...]:
    shown = {**error, "field": error["field"] if error["field"] is not None else "(record)"}
    return tuple("" if shown[c] is None else str(shown[c]) for c in COLUMNS)


def table_rows(page: Page) -> list[tuple[str, ...]]:
    cells = page.locator("#errors-table tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    return [tuple(row) for row in cells]


def all_pages(page: Page) -> list[list[tuple[str, ...]]]:
    """Every page of the error table, following "Next page" until it is disabled."""
    pages = [table_rows(page)]
    next_button = page.get_by_role("button", name="Next page")
    while next_button.is_enabled():
        caption = page.locator("#errors-caption").text_content()
        next_button.click()
        expect(page.locator("#errors-caption")).not_to_have_text(caption or "")
        pages.append(table_rows(page))
    return pages


def upload(tab: Session, path: Path, resource: str, mode: str = "upsert") -> str:
    """Upload ``path`` through the form; returns the new job's id (once the page shows it)."""
    page = tab.page
    form = page.locator("#import")
    form.get_by_label("File to import").set_input_files(path)
    form.get_by_label("Resource").select_option(resource)
    form.get_by_label("Mode").select_option(mode)
    with page.expect_response(
        lambda r: r.url.endswith("/v1/imports") and r.request.method == "POST"
    ) as posted:
        page.get_by_role("button", name="Upload and import").click()
    assert posted.value.status == 202, posted.value.text()
    job_id: str = posted.value.json()["job_id"]
    expect(page.locator("#job-id")).to_have_text(job_id)
    return job_id


def test_import_live_then_error_table_paged_filtered_and_downloaded(
    tab: Session, web: Bulkio, token: str, datadir: Path, artifacts: Path
) -> None:
    path, expected = make(datadir, "users", "csv", ROWS, seed=31, defect_rate=0.05)
    page = tab.page
    tab.sign_in(token)
    streams: list[Response] = []
    page.on("response", lambda r: streams.append(r) if "/events?" in r.url else None)

    job_id = upload(tab, path, "users")
    # the upload bar went to the end
    expect(page.locator("#upload-progress")).to_have_js_property("value", 100)
    expect(page.locator("#upload-text")).to_have_text(re.compile(r"uploaded$"))
    # the live view ends on the job's outcome, announced in its status region
    status = page.get_by_role("status").filter(has_text="Completed")
    expect(status).to_have_text(
        f"Completed: {expected.successful:,} accepted, {expected.failed:,} rejected."
    )
    job = web.client_for(token).get(f"/v1/jobs/{job_id}").json()
    counters = {
        "#c-processed": job["processed"],
        "#c-successful": job["successful"],
        "#c-failed": job["failed"],
        "#c-inserted": job["inserted_records"],
        "#c-updated": job["updated_records"],
    }
    for selector, value in counters.items():
        expect(page.locator(selector)).to_have_text(f"{value:,}")
    expect(page.locator("#job-progress")).to_have_js_property("value", 100)
    expect(page.locator("#job-feed")).to_have_text(
        "Followed to its end through the job's event stream."
    )
    # ... and it came through the event stream (the signed events_url), not by polling
    assert streams, "the page never opened the job's event stream"
    assert all(r.status == 200 for r in streams), [r.status for r in streams]
    assert streams[0].headers["content-type"].startswith("text/event-stream")
    assert re.search(rf"/v1/jobs/{job_id}/events\?expires=\d+&signature=", streams[0].url)
    assert "authorization" not in streams[0].request.headers
    events = web.client_for(token).get(f"/v1/jobs/{job_id}/events").json()["events"]
    assert [e["type"] for e in events][-1] == "completed"
    assert [e["type"] for e in events].count("progress") == 3  # one per batch of 1,000
    expect(page.locator("#job")).to_have_attribute("data-event-seq", str(events[-1]["seq"]))

    # The error table, page by page, is the API's report.
    expect(page.get_by_role("heading", name="Rejected records")).to_be_visible()
    report = report_rows(web, token, job_id)
    expect(page.locator("#errors-table tbody tr")).to_have_count(50)
    # The README's picture: the page as it looks now, at 1440 px.
    page.set_viewport_size({"width": WIDE, "height": 1500})
    page.screenshot(path=artifacts / "web-1440.png")
    if os.environ.get("BULKIO_TEST_WRITE_DOCS") == "1":
        DOCS_PICTURE.write_bytes((artifacts / "web-1440.png").read_bytes())
    assert len(report) == len(expected.errors) > 100  # more than two pages of 50
    pages = all_pages(page)
    # "Next page" went disabled under the pointer: the focus moved to "Previous page"
    expect(page.get_by_role("button", name="Previous page")).to_be_focused()
    assert [len(p) for p in pages[:-1]] == [50] * (len(pages) - 1)
    assert [row for p in pages for row in p] == report
    # back one page
    page.get_by_role("button", name="Previous page").click()
    expect(page.locator("#errors-page")).to_have_text(f"Page {len(pages) - 1}")
    assert table_rows(page) == pages[-2]

    page.screenshot(path=artifacts / "import-1440.png", full_page=True)

    # Filter by field, then by code as well: the rows are the report's rows of that kind.
    table = page.locator("#errors")
    table.get_by_label("Field").select_option("email")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page.locator("#errors-page")).to_have_text("Page 1")
    expect(page.locator("#errors-caption")).to_contain_text("(filtered)")
    emails = [row for row in report if row[2] == "email"]
    assert emails and [row for p in all_pages(page) for row in p] == emails
    table.get_by_label("Code").select_option("invalid_format")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page.locator("#errors-caption")).to_contain_text("(filtered)")
    wanted = [row for row in emails if row[3] == "invalid_format"]
    expect(page.locator("#errors-table tbody tr")).to_have_count(min(len(wanted), 50))
    assert [row for p in all_pages(page) for row in p] == wanted
    # Clear: the whole report again
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#errors-caption")).not_to_contain_text("(filtered)")
    assert table_rows(page) == report[:50]

    # The full report downloads as the API serves it (token in a header, never in a URL).
    for fmt in ("csv", "ndjson"):
        with page.expect_download() as download:
            page.get_by_role("button", name=f"Download {fmt.upper()}").click()
        assert download.value.suggested_filename == f"errors-{job_id}.{fmt}"
        saved = artifacts / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.read_bytes() == api_report(web, token, job_id, fmt).content
    saved_rows = (artifacts / f"errors-{job_id}.ndjson").read_text().splitlines()
    assert [_cells(json.loads(line)) for line in saved_rows] == report  # what the table showed
    header = (artifacts / f"errors-{job_id}.csv").read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)

    # The narrow screen: nothing wider than the viewport but the tables' own scroll regions.
    page.set_viewport_size({"width": NARROW, "height": 800})
    tab.fits()
    page.screenshot(path=artifacts / "import-360.png", full_page=True)
    assert all(token not in url for url in tab.requests)


def test_without_the_event_stream_the_page_polls_to_the_end(
    tab: Session, web: Bulkio, token: str, datadir: Path
) -> None:
    """The stream refused (as an expired events_url would be): the page falls back to polling
    ``GET /v1/jobs/{id}`` and still shows the outcome and the errors."""
    path, expected = make(datadir, "users", "csv", 500, seed=32, defect_rate=0.05)
    page = tab.page
    page.route(re.compile(r".*/v1/jobs/[^/]+/events\?.*"), lambda route: route.fulfill(status=403))
    tab.sign_in(token)
    job_id = upload(tab, path, "users")
    expect(page.locator("#job-feed")).to_contain_text("every few seconds")
    expect(page.get_by_role("status").filter(has_text="Completed")).to_have_text(
        f"Completed: {expected.successful:,} accepted, {expected.failed:,} rejected."
    )
    polled = [u for u in tab.requests if u.endswith(f"/v1/jobs/{job_id}")]
    assert polled, "the page never polled the job"
    assert page.locator("#job").get_attribute("data-event-seq") is None  # no event came
    assert table_rows(page) == report_rows(web, token, job_id)[:50]


def test_an_upload_the_api_refuses_says_why(tab: Session, token: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    tab.sign_in(token)
    tab.page.get_by_label("File to import").set_input_files(empty)
    tab.page.get_by_role("button", name="Upload and import").click()
    expect(tab.page.get_by_role("alert")).to_have_text("Upload refused: the uploaded file is empty")


def test_reached_by_another_host_name_the_page_still_only_talks_to_its_own_origin(
    localhost_tab: Session, web: Bulkio, token: str, datadir: Path
) -> None:
    """The job view's events_url and the pages' next links name BULKIO_PUBLIC_URL's host
    (127.0.0.1); the page uses their paths on its own origin (localhost), else its
    Content-Security-Policy would refuse them (checked on the way out, with the origins)."""
    tab = localhost_tab
    path, expected = make(datadir, "users", "csv", 3000, seed=33, defect_rate=0.05)
    tab.sign_in(token)
    job_id = upload(tab, path, "users")
    page = tab.page
    expect(page.get_by_role("status").filter(has_text="Completed")).to_be_visible()
    job = web.client_for(token).get(f"/v1/jobs/{job_id}").json()
    assert job["events_url"].startswith(web.env["BULKIO_PUBLIC_URL"])
    assert not tab.origin.startswith(web.env["BULKIO_PUBLIC_URL"])
    assert page.locator("#job").get_attribute("data-event-seq")  # through the stream
    expect(page.locator("#errors-table tbody tr")).to_have_count(50)
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#errors-page")).to_have_text("Page 2")
    assert table_rows(page) == report_rows(web, token, job_id)[50:100]
    assert any(f"{tab.origin}/v1/jobs/{job_id}/events?" in url for url in tab.requests)
    assert expected.failed > 50


def test_a_dropped_file_is_uploaded_and_a_queued_job_can_be_cancelled(
    tab: Session, web: Bulkio, token: str
) -> None:
    """A file dropped on the box (a real drop event with a DataTransfer) is the one uploaded;
    with the worker stopped the job waits queued, and "Cancel job" ends it at once."""
    sample = SAMPLES / "users.csv"
    page = tab.page
    tab.sign_in(token)
    page.locator("#drop").evaluate(
        """(zone, text) => {
            const data = new DataTransfer();
            data.items.add(new File([text], "dropped-users.csv", {type: "text/csv"}));
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        sample.read_text(),
    )
    expect(page.locator("#announce")).to_have_text("dropped-users.csv chosen.")
    worker = web.workers[0]
    worker.signal(signal.SIGSTOP)
    try:
        with page.expect_response(lambda r: r.url.endswith("/v1/imports")) as posted:
            page.get_by_role("button", name="Upload and import").click()
        job_id = posted.value.json()["job_id"]
        expect(page.locator("#job-file")).to_have_text("(dropped-users.csv)")
        expect(page.get_by_role("status").filter(has_text="Queued")).to_be_visible()
        page.get_by_role("button", name="Cancel job").click()
        expect(page.get_by_role("status").filter(has_text="Cancelled")).to_be_visible()
        expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    finally:
        worker.signal(signal.SIGCONT)
    job = web.client_for(token).get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["file_name"] == "dropped-users.csv"
    assert job["progress"]["total_bytes"] == sample.stat().st_size
