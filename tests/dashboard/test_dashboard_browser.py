"""The dashboard at / and the bundled GraphiQL, driven in Chromium against a real server: sign
in, see a visit from another browser arrive live, open its contact, tag it, search; a read key
sees no write buttons; Check your site; a narrow window; GraphiQL with the internet cut off."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import Dashboard

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000
BOT = "python-requests/2.31"


def site_page(dashboard: Dashboard, path: str, title: str) -> str:
    dashboard.site.pages[path] = (
        f"<html><head><title>{title}</title></head><body>{dashboard.loader()}</body></html>"
    )
    return dashboard.site.url(path)


def watched(context: Any, dashboard: Dashboard) -> tuple[Any, list[str]]:
    """A page whose JavaScript errors and requests to anywhere but the server are collected."""
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith((dashboard.url, "ws://localhost", "data:"))
            else problems.append(f"request to {request.url}")
        ),
    )
    return page, problems


def sign_in(page: Any, dashboard: Dashboard, key: str) -> None:
    page.goto(dashboard.url + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#nav:not([hidden])", timeout=TIMEOUT_MS)
    # Subscribed: the visitors-online subscription has answered over the websocket.
    expect(page.locator("#online")).not_to_have_text("-", timeout=TIMEOUT_MS)


def test_sign_in_see_a_visit_arrive_open_its_contact_tag_it_and_search(
    chromium: Any, dashboard: Dashboard
) -> None:
    context = chromium.new_context(viewport={"width": 1100, "height": 760})
    visitor = chromium.new_context()
    try:
        page, problems = watched(context, dashboard)
        sign_in(page, dashboard, dashboard.write_key)
        assert page.locator("#who-name").inner_text() == "editor (write)"
        assert page.locator("#visits tr.visit").count() == 0

        visitor.new_page().goto(site_page(dashboard, "/spring", "Spring sale"))
        row = page.locator("#visits tr.visit", has_text="Spring sale")
        row.wait_for(timeout=TIMEOUT_MS)
        assert dashboard.site.url("/spring") in row.inner_text()
        assert "anonymous" in row.inner_text() and "Chrome" in row.inner_text()
        expect(page.locator("#chart rect")).to_have_count(60, timeout=TIMEOUT_MS)
        dashboard.shot(page, "dashboard-live.png")

        row.get_by_role("link").click()
        page.locator("#timeline tr.entry", has_text="Spring sale").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("#contact-title").inner_text().startswith("Anonymous visitor")
        page.get_by_label("Add a tag").fill("VIP")
        page.get_by_role("button", name="Add", exact=True).click()
        page.locator("#contact-tags .tag", has_text="VIP").wait_for(timeout=TIMEOUT_MS)
        page.locator("#timeline tr.entry", has_text="added VIP").wait_for(timeout=TIMEOUT_MS)
        dashboard.shot(page, "dashboard-contact.png")
        contact = dashboard.db.contacts.find_one({})
        assert contact is not None and contact["tags"] == ["VIP"]

        page.get_by_role("link", name="Contacts", exact=True).first.click()
        for field, value, found in (
            ("URL visited", "SPRING", 1),
            ("Tag", "vip", 1),
            ("Email", "nobody@example.com", 0),
        ):
            page.get_by_label(field, exact=True).fill(value)
            page.get_by_role("button", name="Search").click()
            page.locator("#search-state", has_text=f"{found} contact").wait_for(timeout=TIMEOUT_MS)
            assert page.locator("#results tr").count() == found
            page.get_by_label(field, exact=True).fill("")
        assert problems == []
    finally:
        context.close()
        visitor.close()


def test_a_read_key_sees_no_write_buttons(chromium: Any, dashboard: Dashboard) -> None:
    httpx.get(
        dashboard.url + "/mtracking.gif",
        params={"page_url": "https://read.example.com/a", "page_title": "A page"},
        headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36"},
    )
    contact = dashboard.db.contacts.find_one({})
    assert contact is not None
    dashboard.db.contacts.update_one({"_id": contact["_id"]}, {"$set": {"tags": ["trial"]}})
    context = chromium.new_context()
    try:
        page, problems = watched(context, dashboard)
        sign_in(page, dashboard, dashboard.read_key)
        assert page.locator("#who-name").inner_text() == "viewer (read)"
        page.goto(f"{dashboard.url}/#contact/{contact['_id']}")
        page.locator("#timeline tr.entry", has_text="A page").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("#contact-tags .tag", has_text="trial").count() == 1
        assert page.locator("#add-tag").count() == 0
        assert page.get_by_role("button", name="Remove tag trial").count() == 0
        assert problems == []
    finally:
        context.close()


def test_check_your_site_gives_the_snippet_and_shows_what_was_refused(
    chromium: Any, dashboard: Dashboard
) -> None:
    context = chromium.new_context(viewport={"width": 1100, "height": 700})
    visitor = chromium.new_context()
    try:
        page, problems = watched(context, dashboard)
        sign_in(page, dashboard, dashboard.read_key)
        page.get_by_role("link", name="Check your site").click()
        snippet = page.locator("#snippet").inner_text()
        assert f"'{dashboard.url}/mtc.js'" in snippet and "mt('send', 'pageview');" in snippet

        # The snippet, pasted into a page of the site, is recorded.
        dashboard.site.pages["/pasted"] = (
            f"<html><head><title>Pasted</title></head><body>{snippet}</body></html>"
        )
        visitor.new_page().goto(dashboard.site.url("/pasted"))
        # A crawler, and mtc.js on a site whose origin is not allowed.
        httpx.get(
            dashboard.url + "/mtracking.gif",
            params={"page_url": dashboard.site.url("/robots")},
            headers={"User-Agent": BOT},
        )
        # The same snippet on a site missing from CM_CORS_ORIGINS (the site's other address):
        # the browser's preflight is refused and the image fallback records the visit.
        other = f"http://127.0.0.1:{dashboard.site.port}"
        visitor.new_page().goto(f"{other}/pasted")

        site = page.locator("#sites tr.site", has_text=f"http://localhost:{dashboard.site.port}")
        site.locator("text=bot user agent").wait_for(timeout=TIMEOUT_MS)
        assert site.locator("td").nth(2).inner_text() == "1"  # the pasted snippet's page view
        assert dashboard.site.url("/robots") in site.inner_text()
        foreign = page.locator("#sites tr.site", has_text=other)
        foreign.locator("text=CM_CORS_ORIGINS").wait_for(timeout=TIMEOUT_MS)
        dashboard.shot(page, "dashboard-site.png")
        assert problems == []
    finally:
        context.close()
        visitor.close()


def test_a_wrong_key_is_refused_and_a_narrow_window_needs_no_sideways_scrolling(
    chromium: Any, dashboard: Dashboard
) -> None:
    context = chromium.new_context(viewport={"width": 380, "height": 800})
    try:
        page, problems = watched(context, dashboard)
        page.goto(dashboard.url + "/")
        page.get_by_label("API key").fill("cm_not-a-key")
        page.get_by_role("button", name="Sign in").click()
        page.locator("#sign-in-error", has_text="not valid").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("#nav").is_hidden()

        sign_in(page, dashboard, dashboard.read_key)
        for view in ("#live", "#contacts", "#site"):
            page.goto(dashboard.url + "/" + view)
            page.wait_for_timeout(200)  # the view's first render (no event to wait on)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), view
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("API key").wait_for(timeout=TIMEOUT_MS)
        assert page.evaluate("sessionStorage.length") == 0

        # Signed in again (another key): one live feed, nothing left of the first session's.
        sign_in(page, dashboard, dashboard.write_key)
        assert page.locator("#visits tr").count() == 0
        for title in ("First", "Second"):
            httpx.get(
                dashboard.url + "/mtracking.gif",
                params={"page_url": "https://again.example.com/", "page_title": title},
                headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36"},
            )
        page.locator("#visits tr.visit", has_text="Second").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("#visits tr.visit", has_text="First").count() == 1
        assert page.locator("#visits tr.visit").count() == 2
        assert problems == []
    finally:
        context.close()


def test_graphiql_runs_offline_with_the_key_entered_once(chromium: Any, dashboard: Dashboard) -> None:
    context = chromium.new_context()
    elsewhere: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(dashboard.url):
            route.continue_()
        else:  # the internet is cut off
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_server)
    try:
        page, problems = watched(context, dashboard)
        page.goto(dashboard.url + "/graphql")
        page.get_by_label("API key").fill(dashboard.read_key)
        with page.expect_response(
            lambda r: r.url.endswith("/graphql") and r.request.method == "POST" and r.status == 200,
            timeout=TIMEOUT_MS,
        ):
            page.get_by_role("button", name="Use this key").click()  # GraphiQL reads the schema
        page.locator(".graphiql-execute-button").click()
        page.locator(".result-window", has_text="totalCount").wait_for(timeout=TIMEOUT_MS)
        dashboard.shot(page, "graphiql.png")
        assert elsewhere == [] and problems == []
    finally:
        context.close()
