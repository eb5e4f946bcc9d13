"""What the browser tests share: a tab on the service and what it did."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, Page

#: Viewport widths the page must be readable at.
WIDE, NARROW = 1440, 360


# Runs in the page before its own scripts: what the Content-Security-Policy refused.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@dataclass
class Session:
    """One browser tab on the service, with what it did."""

    page: Page
    context: BrowserContext
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def goto_ui(self) -> None:
        self.page.goto(f"{self.origin}/ui")

    def sign_in(self, token: str) -> None:
        self.goto_ui()
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("heading", name="Import a file").wait_for()

    def too_wide(self) -> list[str]:
        """Elements that stick out of the viewport, to say why the page is too wide (inside a
        table's scroll region only those positioned out of its flow count)."""
        return list(
            self.page.evaluate(
                """() => [...document.querySelectorAll("body *")]
                .filter((e) => e.getClientRects().length
                        && e.getBoundingClientRect().right > window.innerWidth + 0.5
                        && (!e.closest(".scroll")
                            || getComputedStyle(e).position === "absolute"))
                .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className} `
                            + `${Math.round(e.getBoundingClientRect().right)}px`)"""
            )
        )

    def fits(self) -> None:
        """Nothing makes the page wider than the viewport (tables scroll in their regions)."""
        width = self.page.evaluate("document.documentElement.scrollWidth")
        viewport = self.page.evaluate("window.innerWidth")
        assert width <= viewport, f"{width}px wide at {viewport}px: {self.too_wide()}"

    def foreign(self) -> list[str]:
        return [url for url in self.requests if _origin(url) != self.origin]

    def csp_violations(self) -> list[str]:
        if self.page.is_closed():
            return []
        return list(self.page.evaluate("window.__cspViolations || []"))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
