"""Every console page, opened once in light and dark: axe's WCAG 2.1 A/AA check (no
violations) and a screenshot saved under target/browser-screenshots/ for a person to look
at; and a keyboard-only walk through the create form.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from console import SCHEMES, assert_no_wcag_violations, log_in
from playwright.sync_api import Page, expect

SHOTS = Path(__file__).resolve().parents[2] / "target" / "browser-screenshots"


@pytest.fixture(scope="module")
def pages(plinth, tenant) -> list[tuple[str, str, str]]:
    """(name, path, who) of every page: an instance and its invoice line exist first."""
    made = plinth.cli_json(
        "instance", "create", "shot-1", "--project", tenant.project_id, "--shape", "vm-tiny",
        "--image", "test-guest", "--wait", token=tenant.token, timeout=300,
    )
    iid = made["instance"]["id"] if "instance" in made else made["id"]
    invoice = plinth.cli_json("invoice", "show", "current", token=tenant.token)
    line = next(l for l in invoice["lines"] if l["record_ids"])
    return [
        ("login", "/login", ""),
        ("dashboard", "/", "tenant"),
        ("instances", "/instances", "tenant"),
        ("instance-new", "/instances/new", "tenant"),
        ("instance", f"/instances/{iid}", "tenant"),
        ("invoices", "/invoices", "tenant"),
        ("invoice", f"/invoices/{invoice['id']}", "tenant"),
        ("invoice-line", f"/invoices/{invoice['id']}/lines/{line['number']}", "tenant"),
        ("hosts", "/hosts", "operator"),
        ("host", f"/hosts/{plinth.host_id}", "operator"),
        ("audit", "/audit", "operator"),
        ("not-found", "/instances/ins_01jz8x3m5q2v7w9k4r6t8y0b1c", "tenant"),
    ]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_page_passes_axe_and_is_photographed(page: Page, plinth, tenant, pages, scheme: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.emulate_media(color_scheme=scheme)
    logged_in_as = None
    for name, path, who in pages:
        if who and who != logged_in_as:
            page.context.clear_cookies()
            log_in(page, tenant.token if who == "tenant" else plinth.operator_token)
            expect(page.get_by_role("button", name="Log out")).to_be_visible()
            logged_in_as = who
        page.goto(path)
        expect(page.get_by_role("heading", level=1).first).to_be_visible()
        if name == "instance":
            expect(page.locator("#terminal")).to_have_attribute("data-state", "ready", timeout=30_000)
        assert_no_wcag_violations(page, f"{path} ({scheme})")
        page.screenshot(path=str(SHOTS / f"{name}-{scheme}.png"), full_page=True)
    assert len(list(SHOTS.glob(f"*-{scheme}.png"))) >= len(pages)


def test_the_create_form_works_from_the_keyboard_alone(page: Page, plinth, tenant) -> None:
    log_in(page, tenant.token, "/login?next=/instances/new")
    expect(page.get_by_role("heading", name="Create an instance")).to_be_visible()
    page.get_by_label("Name").focus()
    page.keyboard.type("keys-1")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Project")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Shape")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Image")).to_be_focused()
    expect(page.get_by_label("Image")).to_have_value("test-guest")
    # On to the Create button (past the estimate's own links and summary), then Enter.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.textContent") == "Create":
            break
    expect(page.get_by_role("button", name="Create")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="keys-1")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("operation op_")
