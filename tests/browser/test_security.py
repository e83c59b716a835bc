"""The console's tenancy and browser security, in a real browser: another tenant's session
sees none of a tenant's rows, live events, pages or console (direct URLs answer 404); a
form posted from another site changes nothing; a console ticket opens one socket once.

Each test gets its own browser context (pytest-playwright's `page`): no cookie is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from console import log_in
from playwright.sync_api import Page, expect


@dataclass
class Other:
    token: str
    project_id: str


@pytest.fixture(scope="module")
def globex(plinth) -> Other:
    """A second tenant, `globex`, with its admin's token and a project."""
    t = plinth.cli_json("tenant", "create", "globex")
    project = plinth.cli_json("project", "create", "web", "--tenant", t["id"])
    bob = plinth.cli_json("user", "create", "bob", "--tenant", t["id"])
    plinth.cli("role-binding", "create", "--user", bob["id"], "--role", "tenant-admin")
    token = plinth.cli_json("token", "create", "bob-browser", "--user", bob["id"])["secret"]
    return Other(token=token, project_id=project["id"])


@pytest.fixture(scope="module")
def demo_vm(plinth, tenant) -> str:
    """A running instance of the demo tenant (its id)."""
    made = plinth.cli_json(
        "instance", "create", "sec-1", "--project", tenant.project_id, "--shape", "vm-tiny",
        "--image", "test-guest", "--wait", token=tenant.token, timeout=300,
    )
    return made["instance"]["id"] if "instance" in made else made["id"]


def test_another_tenant_sees_no_row_event_page_or_console_of_this_one(page: Page, plinth, tenant, globex, demo_vm) -> None:
    log_in(page, globex.token, "/login?next=/instances")
    expect(page.get_by_role("heading", name="Instances", level=1)).to_be_visible()
    expect(page.locator(f"#row-{demo_vm}")).to_have_count(0)
    page.evaluate("window.plinthNotReloaded = true")

    # The demo tenant's instance changes while globex watches; globex's own instance is
    # made at the same time: its row arrives (the stream works), the other never does.
    plinth.cli("instance", "reboot", demo_vm, token=tenant.token)
    made = plinth.cli_json(
        "instance", "create", "bob-1", "--project", globex.project_id, "--shape", "vm-tiny",
        "--image", "test-guest", token=globex.token,
    )
    mine = made["instance"]["id"] if "instance" in made else made["id"]
    expect(page.locator(f"#row-{mine}")).to_have_count(1, timeout=30_000)
    expect(page.locator(f"#row-{demo_vm}")).to_have_count(0)
    assert page.evaluate("window.plinthNotReloaded === true")
    assert demo_vm not in page.content()

    # Direct URLs answer as for an id that never existed.
    for path in [f"/instances/{demo_vm}", "/instances/ins_01jz8x3m5q2v7w9k4r6t8y0b1c"]:
        r = page.goto(path)
        assert r is not None and r.status == 404, path
        expect(page.get_by_role("heading", level=1)).to_have_text("Not Found")
    invoice = plinth.cli_json("invoice", "show", "current", token=tenant.token)
    for path in [f"/invoices/{invoice['id']}", f"/invoices/{invoice['id']}/lines/1", f"/invoices/{invoice['id']}/csv"]:
        r = page.goto(path)
        assert r is not None and r.status == 404, path
    # No console ticket for it either.
    r = page.request.post(f"/instances/{demo_vm}/console/ticket")
    assert r.status == 404, r.status


def test_a_form_posted_from_another_site_changes_nothing(page: Page, plinth, tenant, demo_vm) -> None:
    log_in(page, tenant.token, "/login?next=/instances")
    expect(page.get_by_role("heading", name="Instances", level=1)).to_be_visible()
    # A page of another site (served by the browser's router here: no network) whose
    # button posts to this console's stop action, with the victim's cookie in the jar.
    evil = f"""<!doctype html><html lang="en"><title>prize</title>
<form method="post" action="{plinth.url}/instances/{demo_vm}/stop"><button>Claim</button></form></html>"""
    page.context.route("http://evil.example/**", lambda route: route.fulfill(status=200, content_type="text/html", body=evil))
    page.goto("http://evil.example/")
    with page.expect_response(lambda r: r.url.endswith(f"/instances/{demo_vm}/stop")) as answer:
        page.get_by_role("button", name="Claim").click()
    # Refused: 403 by the origin check, or 401 when the browser kept the Lax cookie back.
    assert answer.value.status in (401, 403), answer.value.status
    state = plinth.cli_json("instance", "get", demo_vm, token=tenant.token)["state"]
    assert state not in ("stopping", "stopped"), state
    ops = plinth.cli_json("operation", "list", token=tenant.token)["items"]
    assert not any(o["kind"] == "instance.stop" and o["target"] == demo_vm for o in ops), ops


OPEN = """async ([url, ticket]) => new Promise((done) => {
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send(JSON.stringify({ ticket }));
  ws.onmessage = (m) => { done(JSON.parse(m.data)); ws.close(); };
  ws.onerror = () => done({ type: "socket-error" });
})"""


def test_a_console_ticket_opens_one_socket_once(page: Page, plinth, tenant, demo_vm) -> None:
    log_in(page, tenant.token, "/login?next=/instances")
    expect(page.get_by_role("heading", name="Instances", level=1)).to_be_visible()
    ticket = page.request.post(f"/instances/{demo_vm}/console/ticket").json()["ticket"]
    assert ticket.startswith("pct_")
    url = plinth.url.replace("https://", "wss://") + f"/instances/{demo_vm}/console/ws"
    assert page.evaluate(OPEN, [url, ticket]) == {"type": "ready", "read_only": False}
    again = page.evaluate(OPEN, [url, ticket])
    assert again["type"] == "error" and "not valid" in again["detail"], again
    assert ticket not in page.url
