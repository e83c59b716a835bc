"""Helpers the console's browser tests share: logging in through the form, the session
cookie as the browser keeps it, and axe's WCAG 2.1 A/AA check."""

from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, Page

COOKIE = "__Host-plinth_session"
WCAG_21_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": WCAG_21_A_AA}, "resultTypes": ["violations"]}
SCHEMES = ["light", "dark"]

axe = Axe()


def log_in(page: Page, token: str, path: str = "/login") -> None:
    """Logs in through the form at `path`."""
    page.goto(path)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()


def session_cookies(context: BrowserContext, url: str) -> list[dict]:
    return [c for c in context.cookies(url) if c["name"] == COOKIE]


def assert_no_wcag_violations(page: Page, what: str) -> None:
    results = axe.run(page, options=AXE_OPTIONS)
    assert results.violations_count == 0, f"axe on {what}:\n{results.generate_report()}"
