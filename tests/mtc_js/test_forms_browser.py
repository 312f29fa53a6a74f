"""Mautic's form embed in Chromium against the real server: a form written by
/form/generate.js on a page of another site and submitted by our form script (success message,
errors next to their fields, redirect), the manual-copy HTML without any script, and the
standalone page /form/N. Forms post multipart/form-data, as Mautic's."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx
import pytest

from tests.mtc_js.conftest import Site, Tracker

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000


def make_form(tracker: Tracker, form_id: int, name: str, **settings: Any) -> None:
    """A form as createForm stores it (docs/data-contract.md, "forms")."""
    tracker.db.forms.delete_many({"_id": form_id})
    tracker.db.forms.insert_one(
        {
            "_id": form_id,
            "name": name,
            "fields": [
                {"name": "email", "label": "Email", "contact_field": "email", "required": True},
                {"name": "firstname", "label": "First name", "contact_field": "firstname", "required": False},
            ],
            "post_action": settings.get("post_action", "message"),
            "post_action_property": settings.get("post_action_property", "Thanks for signing up!"),
            "published": True,
            "created_at": dt.datetime.now(dt.UTC),
        }
    )


def embedded(tracker: Tracker, site: Site, path: str, form_id: int) -> str:
    site.pages[path] = (
        "<!doctype html><html><head><title>Sign up</title></head><body><h1>Newsletter</h1>"
        f'<script type="text/javascript" src="{tracker.url}/form/generate.js?id={form_id}"></script>'
        "</body></html>"
    )
    return site.url(path)


def submissions(tracker: Tracker) -> list[dict[str, Any]]:
    return list(tracker.db.activities.find({"type": "form_submitted"}))


def test_a_generated_form_on_another_site_shows_success_and_records_the_contact(
    tracker: Tracker, site: Site, context: Any
) -> None:
    make_form(tracker, 41, "Newsletter")
    page = context.new_page()
    page.goto(embedded(tracker, site, "/signup.html", 41))
    form = page.locator("#mauticform_newsletter")
    form.wait_for(timeout=TIMEOUT_MS)
    assert form.get_attribute("enctype") == "multipart/form-data"
    page.fill("#mauticform_input_newsletter_email", "ann@example.com")
    page.fill("#mauticform_input_newsletter_firstname", "Ann")
    page.click("#mauticform_input_newsletter_submit")
    message = page.locator("#mauticform_newsletter_message", has_text="Thanks for signing up!")
    message.wait_for(timeout=TIMEOUT_MS)
    assert page.input_value("#mauticform_input_newsletter_email") == ""  # the form is reset
    assert page.inner_text("#mauticform_input_newsletter_submit") == "Submit"
    contact = tracker.db.contacts.find_one({"ids": "email:ann@example.com"})
    assert contact is not None and contact["fields"]["firstname"] == "Ann"
    [entry] = submissions(tracker)
    assert entry["contact_id"] == contact["_id"] and entry["data"]["values"]["email"] == "ann@example.com"


def test_errors_show_next_to_their_fields_in_the_page_and_from_the_server(
    tracker: Tracker, site: Site, context: Any
) -> None:
    make_form(tracker, 42, "Contact us")
    page = context.new_page()
    page.goto(embedded(tracker, site, "/contact.html", 42))
    page.locator("#mauticform_contactus").wait_for(timeout=TIMEOUT_MS)
    # Empty: stopped in the page, nothing sent.
    page.click("#mauticform_input_contactus_submit")
    error = page.locator("#mauticform_contactus_email .mauticform-errormsg")
    assert error.is_visible() and error.inner_text() == "This is required."
    assert "mauticform-has-error" in (page.get_attribute("#mauticform_contactus_email", "class") or "")
    # A browser takes a@b as an email; the server does not: its message shows next to the field.
    page.fill("#mauticform_input_contactus_email", "a@b")
    page.click("#mauticform_input_contactus_submit")
    page.locator("#mauticform_contactus_email .mauticform-errormsg", has_text="valid email").wait_for(
        timeout=TIMEOUT_MS
    )
    assert submissions(tracker) == [] and tracker.db.contacts.count_documents({}) == 0


def test_a_redirect_form_takes_the_page_to_its_url(tracker: Tracker, site: Site, context: Any) -> None:
    site.pages["/welcome.html"] = "<!doctype html><title>Welcome</title>"
    make_form(tracker, 43, "Trial", post_action="redirect", post_action_property=site.url("/welcome.html"))
    page = context.new_page()
    page.goto(embedded(tracker, site, "/trial.html", 43))
    page.locator("#mauticform_trial").wait_for(timeout=TIMEOUT_MS)
    page.fill("#mauticform_input_trial_email", "bob@example.com")
    page.click("#mauticform_input_trial_submit")
    page.wait_for_url(site.url("/welcome.html"), timeout=TIMEOUT_MS)
    assert tracker.db.contacts.count_documents({"ids": "email:bob@example.com"}) == 1


def test_the_manual_copy_without_any_script_posts_as_a_plain_html_form(
    tracker: Tracker, site: Site, context: Any
) -> None:
    make_form(tracker, 44, "Plain")
    query = "{ forms { id html } }"
    data = httpx.post(
        tracker.url + "/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {tracker.read_key}"},
    ).json()["data"]
    copy = next(form["html"] for form in data["forms"] if form["id"] == 44)
    assert f'<script src="{tracker.url}/media/js/mautic-form.js"' in copy
    site.pages["/plain.html"] = "<!doctype html><title>Plain</title>" + re.sub(
        r"<script.*?</script>", "", copy
    )
    page = context.new_page()
    page.goto(site.url("/plain.html"))
    page.fill("#mauticform_input_plain_email", "carl@example.com")
    with page.expect_navigation(timeout=TIMEOUT_MS):
        page.click("#mauticform_input_plain_submit")
    assert "Thanks for signing up!" in page.content()
    assert tracker.db.contacts.count_documents({"ids": "email:carl@example.com"}) == 1
    assert len(submissions(tracker)) == 1

    # An error: the server's page says what is wrong (no script to show it next to the field).
    page.goto(site.url("/plain.html"))
    page.fill("#mauticform_input_plain_email", "a@b")
    with page.expect_navigation(timeout=TIMEOUT_MS):
        page.click("#mauticform_input_plain_submit")
    assert "valid email" in page.content() and len(submissions(tracker)) == 1

    # A redirect form, plain: the browser follows the server's redirect.
    site.pages["/done.html"] = "<!doctype html><title>Done</title>"
    make_form(tracker, 46, "Plain", post_action="redirect", post_action_property=site.url("/done.html"))
    site.pages["/plain2.html"] = "<!doctype html><title>Plain</title>" + re.sub(
        r"<script.*?</script>", "", copy.replace("formId=44", "formId=46").replace('value="44"', 'value="46"')
    )
    page.goto(site.url("/plain2.html"))
    page.fill("#mauticform_input_plain_email", "erin@example.com")
    page.click("#mauticform_input_plain_submit")
    page.wait_for_url(site.url("/done.html"), timeout=TIMEOUT_MS)
    assert tracker.db.contacts.count_documents({"ids": "email:erin@example.com"}) == 1


def test_the_standalone_form_page(tracker: Tracker, context: Any) -> None:
    make_form(tracker, 45, "Standalone")
    page = context.new_page()
    page.goto(f"{tracker.url}/form/45")
    page.fill("#mauticform_input_standalone_email", "dana@example.com")
    page.click("#mauticform_input_standalone_submit")
    page.locator("#mauticform_standalone_message", has_text="Thanks for signing up!").wait_for(
        timeout=TIMEOUT_MS
    )
    assert tracker.db.contacts.count_documents({"ids": "email:dana@example.com"}) == 1
    assert httpx.get(f"{tracker.url}/form/999").status_code == 404
    assert httpx.get(f"{tracker.url}/form/generate.js?id=999").text == ""
