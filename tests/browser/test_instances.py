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


def row_of(page: Page, name: str):
    table = page.get_by_role("table", name="Instances")
    return table.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


def test_a_tenant_creates_an_instance_priced_first_watches_it_run_reads_its_console_and_stops_it(
    page: Page, plinth, tenant
) -> None:
    log_in(page, tenant.token)
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

    # The serial console's history shows the guest came up (the page draws it as it is
    # when loaded: load it again until the guest has written its marker).
    console = page.get_by_label("Serial console output")
    expect(console).to_be_visible()
    instance_url = page.url.split("?")[0]

    def guest_ready() -> bool:
        page.goto(instance_url)
        return "PLINTH-GUEST-READY" in console.inner_text()

    deadline = page.evaluate("Date.now()") + GUEST_BOOT_DEADLINE_MS
    while not guest_ready():
        assert page.evaluate("Date.now()") < deadline, "no PLINTH-GUEST-READY in the serial console"
        page.wait_for_timeout(1000)

    # Stop from the page: the badge follows the instance to stopped, live.
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("status")).to_contain_text("operation op_")
    expect(page.locator(".state").first).to_have_text("stopped", timeout=60_000)
    expect(row.locator(".state")).to_have_text("stopped", timeout=60_000)
    assert watcher.evaluate("window.plinthNotReloaded === true"), "the list reloaded"


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
