"""The web page itself: how it is served (Content-Security-Policy, files), signing in and out,
and what makes it usable without a mouse or a screen (labels, headers, focus, announcements)."""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from playwright.sync_api import Page, expect

from engine.auth import revoke_token
from tests.browser.webpage import NARROW, Session
from tests.support.service import Bulkio, make_token

pytestmark = pytest.mark.integration


def test_the_page_and_its_files_are_served_with_a_strict_policy(web: Bulkio) -> None:
    anonymous = web.client_for(None)
    root = anonymous.get("/")
    assert root.status_code == 302 and root.headers["location"] == "/ui"
    page = anonymous.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split("; ")}
    for directive in ("default-src", "script-src", "style-src", "connect-src", "img-src"):
        assert csp[directive] == ["'self'"], directive
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    # no inline script: only the data the forms are built from, which is not executed
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert [attrs for attrs, body in scripts if body.strip()] == [
        ' type="application/json" id="catalog"'
    ]
    catalog = json.loads(next(body for attrs, body in scripts if "catalog" in attrs))
    assert list(catalog["resources"]) == ["users", "articles", "comments"]
    assert "email" in catalog["resources"]["users"]["fields"]
    for name, media in (("app.js", "text/javascript"), ("app.css", "text/css")):
        res = anonymous.get(f"/ui/{name}")
        assert res.status_code == 200 and res.headers["content-type"].startswith(media)
        assert res.headers["content-security-policy"] == page.headers["content-security-policy"]
    for missing in ("index.html", "..%2Fui.py", "nope.js"):
        res = anonymous.get(f"/ui/{missing}")
        assert res.status_code == 404, missing
        assert res.headers["content-type"].startswith("application/problem+json")
    # the page is not an API operation
    paths = anonymous.get("/schema/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]


def test_sign_in_keeps_the_token_for_this_tab_only_and_sign_out_forgets_it(
    tab: Session, token: str, web: Bulkio
) -> None:
    page = tab.page
    tab.goto_ui()
    expect(page.get_by_label("API token")).to_be_focused()
    # An unknown token: the reason, and still signed out.
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("the API token is unknown or revoked")
    expect(page.get_by_role("heading", name="Import a file")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('bulkio.token')") is None
    # A good one: in sessionStorage, through a reload, not in another tab.
    tab.sign_in(token)
    expect(page.locator("#announce")).to_have_text("Signed in.")
    assert page.evaluate("sessionStorage.getItem('bulkio.token')") == token
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    page.reload()
    expect(page.get_by_role("heading", name="Import a file")).to_be_visible()
    other = page.context.new_page()
    other.goto(f"{tab.origin}/ui")
    expect(other.get_by_label("API token")).to_be_visible()
    other.close()
    # Every API call carried it as a bearer header, never in a URL.
    assert all(token not in url for url in tab.requests)
    # Sign out: gone.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    expect(page.locator("#announce")).to_have_text("Signed out.")
    assert page.evaluate("sessionStorage.getItem('bulkio.token')") is None
    page.reload()
    expect(page.get_by_label("API token")).to_be_visible()


def test_a_token_revoked_meanwhile_signs_the_page_out_with_the_reason(
    tab: Session, browser_database_url: str
) -> None:
    token = make_token(browser_database_url, "short-lived", ["admin"])
    tab.sign_in(token)
    with psycopg.connect(browser_database_url, autocommit=True) as conn:
        token_id = conn.execute(
            "SELECT id::text FROM api_tokens WHERE owner = 'short-lived'"
        ).fetchone()
        assert token_id is not None and revoke_token(conn, token_id[0])
    page = tab.page
    # The API trusts a token it looked up for a few seconds (api/auth.py): ask until it knows.
    # (The form is submitted by script: the button may vanish between a check and a click.)
    for _ in range(60):
        if page.get_by_label("API token").is_visible():
            break
        page.evaluate("document.getElementById('jobs-filter').requestSubmit()")
        page.wait_for_timeout(500)
    expect(page.locator("#signin-error")).to_contain_text("refused the token")
    assert page.evaluate("sessionStorage.getItem('bulkio.token')") is None


def accessible_names(page: Page) -> list[str]:
    """Controls that have no accessible name (label, aria-label or text)."""
    return list(
        page.evaluate(
            """() => [...document.querySelectorAll("input, select, textarea, button, a[href]")]
            .filter((e) => e.getClientRects().length)
            .filter((e) => !((e.labels && e.labels.length) || e.getAttribute("aria-label")
                             || e.getAttribute("aria-labelledby") || e.textContent.trim()))
            .map((e) => e.outerHTML)"""
        )
    )


def test_controls_are_labelled_tables_have_headers_and_status_is_announced(
    tab: Session, token: str
) -> None:
    page = tab.page
    tab.goto_ui()
    assert accessible_names(page) == []
    tab.sign_in(token)
    assert accessible_names(page) == []
    page.locator("#export").get_by_text("Filters", exact=True).click()
    for resource in ("users", "articles", "comments"):
        page.locator("#export").get_by_label("Resource").select_option(resource)
        assert accessible_names(page) == []
    headers = page.locator("thead th").evaluate_all("ths => ths.map(th => th.scope)")
    assert headers and set(headers) == {"col"}
    for table in ("errors-table", "jobs-table"):
        assert page.locator(f"#{table} caption").count() == 1
    assert page.locator("#announce").get_attribute("aria-live") == "polite"
    assert page.locator("#job-status").get_attribute("role") == "status"
    assert page.locator("#export-status").get_attribute("role") == "status"
    assert page.locator("#alert").get_attribute("role") == "alert"
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").count() == 1


def test_everything_works_from_the_keyboard_with_a_visible_focus(tab: Session, token: str) -> None:
    page = tab.page
    tab.goto_ui()
    # the token field has the focus; Enter signs in
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Import a file")).to_be_visible()
    expect(page.locator("#file")).to_be_focused()
    # Tab reaches every visible control, round the page, each with a visible outline.
    reached: list[str] = []
    outlines: dict[str, str] = {}
    for _ in range(80):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => {
                const e = document.activeElement;
                if (e === document.body) return null;  // past the last control
                const s = getComputedStyle(e);
                return [e.id || e.textContent.trim(), `${s.outlineStyle} ${s.outlineWidth}`];
            }"""
        )
        if focused is None:  # the browser's own stop; the next Tab starts at the top
            continue
        if focused[0] in reached:
            break
        reached.append(focused[0])
        outlines[focused[0]] = focused[1]
    for wanted in (
        "import-resource",
        "import-mode",
        "import-format",
        "import-submit",
        "jobs-kind",
        "Show jobs",
        "export-resource",
        "export-gzip",
        "export-field-email",
        "Filters",
        "export-now",
        "export-submit",
        "sign-out",
    ):
        assert wanted in reached, (wanted, reached)
    assert {k: v for k, v in outlines.items() if v != "solid 3px"} == {}
    # a keyboard-only export: focus the button, press Enter
    page.locator("#export-submit").focus()
    with page.expect_download():
        page.keyboard.press("Enter")
    expect(page.locator("#export-status")).to_contain_text("Export downloaded")
    expect(page.locator("#export-submit")).to_be_focused()  # busy, never disabled


def test_the_page_fits_a_narrow_screen_before_and_after_signing_in(
    tab: Session, token: str
) -> None:
    page = tab.page
    page.set_viewport_size({"width": NARROW, "height": 800})
    tab.goto_ui()
    tab.fits()
    tab.sign_in(token)
    tab.fits()
    page.locator("#export").get_by_text("Filters", exact=True).click()
    for resource in ("users", "articles", "comments"):
        page.locator("#export").get_by_label("Resource").select_option(resource)
        tab.fits()
