"""A tenant's instances in a real browser: the create form prices the shape before
anything is made, the list follows the instance's state live (no reload), its page shows
the guest's serial console, and it stops from the page; a create placement refuses is
explained in the form, constraint by constraint. axe checks each page.

The guest is the busybox test guest under `plinth up`'s local agent (real QEMU, TCG).
"""

from __future__ import annotations

import pytest
from console import SCHEMES, assert_no_wcag_violations, log_in
from playwright.sync_api import Page, expect

GUEST_BOOT_DEADLINE_MS = 180_000
# A second person's browser (its own cookies), as conftest's contexts are made.
BROWSER_CONTEXT = {"ignore_https_errors": True}


def row_of(page: Page, name: str):
    table = page.get_by_role("table", name="Instances")
    return table.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


def test_a_tenant_creates_an_instance_priced_first_watches_it_run_reads_its_console_and_stops_it(
    page: Page, plinth, tenant
) -> None:
    log_in(page, tenant.token, "/login?next=/instances")
    expect(page).to_have_url(f"{plinth.url}/instances")
    # A second tab stays on the list, marked, to show its rows change without a reload.
    watcher = page.context.new_page()
    watcher.goto("/instances")
    expect(watcher.get_by_role("table", name="Instances")).to_be_attached()
    watcher.evaluate("window.plinthNotReloaded = true")

    page.get_by_role("link", name="Create an instance").click()
    expect(page.get_by_role("heading", name="Create an instance")).to_be_visible()
    page.get_by_label("Shape").select_option("vm-tiny")
    # The price shows before anything is submitted, as the API prices the shape.
    priced = plinth.cli_json("shape", "price", "vm-tiny", token=tenant.token)
    hourly = priced["hourly_micros"]
    text = f"{priced['currency']} {hourly // 1_000_000}.{hourly % 1_000_000:06d}"
    expect(page.locator("#price-hourly")).to_have_text(text)
    expect(page.get_by_role("table", name="Price by meter")).to_contain_text("running_seconds")
    page.get_by_label("Name").fill("web-1")
    page.get_by_label("Image").select_option("test-guest")
    page.get_by_role("button", name="Create").click()

    # The instance's page names the operation started.
    expect(page.get_by_role("heading", name="web-1")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("operation op_")

    # The watching tab got the new row and followed it to running, without reloading.
    row = row_of(watcher, "web-1")
    expect(row).to_have_count(1)
    expect(row.locator(".state")).to_have_text("running", timeout=GUEST_BOOT_DEADLINE_MS)
    assert watcher.evaluate("window.plinthNotReloaded === true"), "the list reloaded"

    # The serial console (xterm.js over a WebSocket opened with a one-time ticket) shows
    # the guest came up, and what is typed runs in the guest's shell.
    terminal = page.locator("#terminal")
    expect(terminal).to_have_attribute("data-state", "ready", timeout=30_000)
    # xterm.js draws only while it is in view (as a user scrolls to it).
    terminal.scroll_into_view_if_needed()
    screen = terminal.locator(".xterm-accessibility-tree")
    expect(screen).to_contain_text("PLINTH-GUEST-READY", timeout=GUEST_BOOT_DEADLINE_MS)
    expect(screen).to_contain_text("PLINTH-CONSOLE-SHELL", timeout=GUEST_BOOT_DEADLINE_MS)
    terminal.click()
    page.keyboard.type("echo PLINTH-TYPED-$((6*7))")
    page.keyboard.press("Enter")
    # 42 is computed by the guest's shell: the line ran there, it is not an echo of the keys.
    expect(screen).to_contain_text("PLINTH-TYPED-42", timeout=60_000)

    # A viewer of the tenant reads the same console but cannot type into it.
    viewer = plinth.cli_json("user", "create", "vera", "--tenant", "demo")
    plinth.cli("role-binding", "create", "--user", viewer["id"], "--role", "viewer")
    vera = plinth.cli_json("token", "create", "vera-browser", "--user", viewer["id"])["secret"]
    other = page.context.browser.new_context(**BROWSER_CONTEXT, base_url=plinth.url)
    try:
        vpage = other.new_page()
        log_in(vpage, vera, f"/login?next={page.url.split(plinth.url)[1].split('?')[0]}")
        vterm = vpage.locator("#terminal")
        expect(vterm).to_have_attribute("data-state", "read-only", timeout=30_000)
        expect(vpage.locator("#terminal-status")).to_contain_text("read-only")
        vterm.scroll_into_view_if_needed()
        vscreen = vterm.locator(".xterm-accessibility-tree")
        expect(vscreen).to_contain_text("PLINTH-TYPED-42")
        vterm.click()
        vpage.keyboard.type("echo PLINTH-VIEWER-$((6*7))")
        vpage.keyboard.press("Enter")
        # Control: what the admin types next reaches the viewer's screen, so output flows;
        # the viewer's line, typed before it, never ran.
        terminal.click()
        page.keyboard.type("echo PLINTH-AFTER-$((6*7))")
        page.keyboard.press("Enter")
        expect(vscreen).to_contain_text("PLINTH-AFTER-42", timeout=60_000)
        expect(vscreen).not_to_contain_text("PLINTH-VIEWER-42")
        expect(screen).not_to_contain_text("PLINTH-VIEWER-42")
    finally:
        other.close()

    # Stop from the page: the badge follows the instance to stopped, live.
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("status")).to_contain_text("operation op_")
    expect(page.locator(".state").first).to_have_text("stopped", timeout=60_000)
    expect(row.locator(".state")).to_have_text("stopped", timeout=60_000)
    assert watcher.evaluate("window.plinthNotReloaded === true"), "the list reloaded"
    assert_no_wcag_violations(page, "an instance's page with its serial console")


def test_a_create_placement_refuses_says_which_constraint_removed_the_hosts(page: Page, plinth, tenant) -> None:
    plinth.cli("shape", "create", "vm-huge", "--vcpus", "512", "--memory-mib", "256")
    log_in(page, tenant.token, "/login?next=/instances/new")
    expect(page.get_by_role("heading", name="Create an instance")).to_be_visible()
    page.get_by_label("Name").fill("too-big")
    page.get_by_label("Shape").select_option("vm-huge")
    page.get_by_label("Image").select_option("test-guest")
    page.get_by_role("button", name="Create").click()

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Not created")
    why = alert.get_by_role("table", name="Why no host can take it")
    expect(why.get_by_role("columnheader", name="Hosts it removed (of 1)")).to_be_visible()
    expect(why.get_by_role("row").filter(has_text="vcpu")).to_contain_text("1")
    # What was typed stays in the form.
    expect(page.get_by_label("Name")).to_have_value("too-big")
    expect(page.get_by_label("Shape")).to_have_value("vm-huge")
    listed = plinth.cli_json("instance", "list", token=tenant.token)["items"]
    assert all(i["name"] != "too-big" for i in listed), "nothing was made"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_instance_pages_have_no_wcag_violations(page: Page, plinth, tenant, scheme: str) -> None:
    page.emulate_media(color_scheme=scheme)
    log_in(page, tenant.token, "/login?next=/instances/new")
    expect(page.get_by_role("heading", name="Create an instance")).to_be_visible()
    expect(page.locator("#price-hourly")).to_be_visible()
    assert_no_wcag_violations(page, f"/instances/new ({scheme})")
    page.goto("/instances")
    expect(page.get_by_role("heading", name="Instances", level=1)).to_be_visible()
    assert_no_wcag_violations(page, f"/instances ({scheme})")


def test_an_invoice_line_drills_down_to_records_that_add_up_and_their_transitions(page: Page, plinth, tenant) -> None:
    plinth.cli(
        "instance", "create", "bill-1", "--project", tenant.project_id, "--shape", "vm-tiny",
        "--image", "test-guest", "--wait", token=tenant.token, timeout=300,
    )
    log_in(page, tenant.token, "/login?next=/invoices")
    page.get_by_role("table", name="Invoices").get_by_role("link", name="draft").first.click()
    lines = page.get_by_role("table", name="Invoice lines")
    running = lines.get_by_role("row").filter(has_text="running_seconds")
    expect(running).to_have_count(1)
    running.get_by_role("link").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("running_seconds")
    expect(page.locator("#adds-up")).to_contain_text("yes")
    # The seconds shown, times their multipliers, add up to the line's quantity.
    records = page.get_by_role("table", name="Ledger records").locator("tbody tr")
    expect(records.first).to_be_visible()
    total = 0.0
    for i in range(records.count()):
        cells = records.nth(i).get_by_role("cell")
        total += float(cells.nth(4).inner_text()) * int(cells.nth(5).inner_text())
    quantity = float(page.locator("#line-quantity").inner_text())
    assert abs(total - quantity) < 1e-5, f"records {total} s, line {quantity} s"
    # Each record's opening transition is on the page, with the operations behind them.
    first_cause = records.first.get_by_role("cell").nth(7).inner_text()
    expect(page.locator(f"tr[id='{first_cause}']")).to_have_count(1)
    expect(page.get_by_role("table", name="Operations")).to_contain_text("instance.create")
    expect(page.get_by_role("table", name="Audit records")).to_contain_text("instances.create")
    assert_no_wcag_violations(page, "an invoice line's evidence")
