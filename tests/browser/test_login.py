"""The console's login, session cookie and logout, in a real browser, plus axe's WCAG 2.1
A/AA check of the login and hosts pages (light and dark colour schemes).

Each test gets a fresh browser context (pytest-playwright's `page`), so no cookie leaks
from one test to the next; they share one `plinth up` (conftest.py).
"""

from __future__ import annotations

import json

import pytest
from console import COOKIE, SCHEMES, assert_no_wcag_violations, log_in, session_cookies
from playwright.sync_api import BrowserContext, Page, expect


def test_operator_logs_in_and_sees_the_local_host(page: Page, plinth) -> None:
    # Not logged in: the console's root asks for a login and comes back after.
    page.goto("/")
    expect(page).to_have_url(f"{plinth.url}/login?next=/")
    expect(page.get_by_role("heading", name="Log in to Plinth")).to_be_visible()
    page.get_by_label("API token").fill(plinth.operator_token)
    page.get_by_role("button", name="Log in").click()

    # An operator starts at the fleet.
    expect(page).to_have_url(f"{plinth.url}/hosts")
    expect(page.get_by_role("heading", name="Hosts", level=1)).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Hosts")).to_be_visible()
    expect(nav.get_by_role("link", name="Instances")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()

    hosts = page.get_by_role("table", name="Hosts")
    expect(hosts).to_be_visible()
    row = hosts.get_by_role("row").filter(has=page.get_by_role("cell", name=plinth.hostname, exact=True))
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("id", f"row-{plinth.host_id}")
    # Name, State, Health, Rack, Last report: the state the API reports.
    expect(row.get_by_role("cell").nth(1)).to_have_text("available")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_login_page_has_no_wcag_violations(page: Page, scheme: str) -> None:
    page.emulate_media(color_scheme=scheme)
    page.goto("/login")
    expect(page.get_by_label("API token")).to_be_visible()
    assert_no_wcag_violations(page, f"/login ({scheme})")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_login_error_has_no_wcag_violations(page: Page, scheme: str) -> None:
    page.emulate_media(color_scheme=scheme)
    log_in(page, "not-a-token")
    expect(page.get_by_role("alert")).to_be_visible()
    assert_no_wcag_violations(page, f"/login with an error ({scheme})")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_hosts_page_has_no_wcag_violations(page: Page, plinth, scheme: str) -> None:
    page.emulate_media(color_scheme=scheme)
    log_in(page, plinth.operator_token)
    expect(page.get_by_role("table", name="Hosts")).to_be_visible()
    assert_no_wcag_violations(page, f"/hosts ({scheme})")


def test_session_cookie_is_httponly_secure_lax_and_hidden_from_scripts(
    page: Page, context: BrowserContext, plinth
) -> None:
    log_in(page, plinth.operator_token)
    expect(page).to_have_url(f"{plinth.url}/hosts")

    stored = session_cookies(context, plinth.url)
    assert len(stored) == 1, f"the browser did not keep {COOKIE}: {context.cookies()}"
    c = stored[0]
    assert c["httpOnly"] is True, c
    assert c["secure"] is True, c
    assert c["sameSite"] == "Lax", c
    assert c["path"] == "/", c
    assert c["domain"] == "127.0.0.1", f"a __Host- cookie is host-only: {c}"
    assert c["value"].startswith("pcs_"), c

    # Scripts in the page cannot read it.
    in_js = page.evaluate("document.cookie")
    assert COOKIE not in in_js and c["value"] not in in_js, f"document.cookie = {in_js!r}"

    # The API token itself is kept nowhere by the browser: not a cookie, not web storage,
    # not the URL or the page.
    state = json.dumps(context.storage_state())
    assert plinth.operator_token not in state
    assert plinth.operator_token not in page.url
    assert plinth.operator_token not in page.content()


def test_logging_out_ends_the_session(page: Page, context: BrowserContext, plinth) -> None:
    log_in(page, plinth.operator_token)
    expect(page).to_have_url(f"{plinth.url}/hosts")
    (old,) = session_cookies(context, plinth.url)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{plinth.url}/login")
    expect(page.get_by_label("API token")).to_be_visible()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    assert session_cookies(context, plinth.url) == [], "the cookie outlived the logout"

    page.goto("/instances")
    expect(page).to_have_url(f"{plinth.url}/login?next=/instances")
    expect(page.get_by_label("API token")).to_be_visible()

    # The old cookie, put back, is refused too: the session ended on the server.
    context.add_cookies(
        [
            {
                "name": COOKIE,
                "value": old["value"],
                "url": plinth.url,
                "secure": True,
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    assert len(session_cookies(context, plinth.url)) == 1, "could not put the old cookie back"
    page.goto("/instances")
    expect(page).to_have_url(f"{plinth.url}/login?next=/instances")
    expect(page.get_by_label("API token")).to_be_visible()

    # Logging in again from there comes back to the page asked for.
    page.get_by_label("API token").fill(plinth.operator_token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{plinth.url}/instances")
    expect(page.get_by_role("heading", name="Instances", level=1)).to_be_visible()


def wrong_token(plinth, kind: str) -> str:
    if kind == "garbage":
        return "not-a-token"
    if kind == "wrong-secret":
        # Well formed, naming the operator's token, with another secret.
        t = plinth.operator_token
        return t[:-4] + ("1111" if t.endswith("0000") else "0000")
    made = plinth.cli_json("token", "create", "browser-revoked")
    plinth.cli("token", "revoke", made["id"])
    return made["secret"]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("garbage", "the token is not valid"),
        ("wrong-secret", "the token is not valid"),
        ("revoked", "the token was revoked"),
    ],
)
def test_a_wrong_token_shows_the_error_on_the_login_form(
    page: Page, context: BrowserContext, plinth, kind: str, message: str
) -> None:
    wrong = wrong_token(plinth, kind)
    page.goto("/login")
    page.get_by_label("API token").fill(wrong)
    with page.expect_response(lambda r: r.url == f"{plinth.url}/login" and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 401

    expect(page).to_have_url(f"{plinth.url}/login")
    expect(page.get_by_role("alert")).to_have_text(message)
    # The form is there again, empty: the wrong token is not echoed back.
    field = page.get_by_label("API token")
    expect(field).to_be_visible()
    expect(field).to_have_value("")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert wrong not in page.content()
    assert session_cookies(context, plinth.url) == []
