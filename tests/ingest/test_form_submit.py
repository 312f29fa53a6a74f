"""/form/submit?formId=N: web forms and mobile apps, identification, errors, timeline."""

import pytest

from contact_monitor.storage.forms import FormDefinition, FormField
from tests.conftest import FIREFOX, IPHONE

FIELDS = [
    FormField("email", "Email", "email", required=True),
    FormField("firstname", "First name", "firstname"),
    FormField("message", "Message"),
]


async def make_form(h, **options):
    aliases = {f.alias for f in await h.services.storage.fields.all()}
    definition = FormDefinition("Contact us", tuple(FIELDS), **options)
    return await h.services.storage.forms.create(definition, contact_fields=aliases)


def posted(form_id, **values):
    return {**{f"mauticform[{k}]": v for k, v in values.items()}, "mauticform[formId]": str(form_id)}


async def test_ajax_submission_identifies_and_records(harness):
    form = await make_form(harness)
    response = await harness.client.post(
        f"/form/submit?formId={form.id}&ajax=1",
        data=posted(form.id, email="ann@example.com", firstname="Ann", message="Hello <b>there</b>"),
    )
    body = response.json()
    assert response.status_code == 200
    assert body == {
        "success": 1,
        "results": {"email": "ann@example.com", "firstname": "Ann", "message": "Hello <b>there</b>"},
        "successMessage": "Thank you!",
        "formName": "contactus",  # Mautic's alias of "Contact us": its form script's key
    }
    contact = await harness.db.contacts.find_one()
    # Mapped fields are set whether publicly updatable or not (a form is an explicit submission).
    assert contact["fields"]["email"] == "ann@example.com" and contact["fields"]["firstname"] == "Ann"
    assert contact["anonymous"] is False
    assert response.cookies["mtc_id"] == contact["_id"]
    activity = await harness.db.activities.find_one({"type": "form_submitted"})
    assert (
        activity["data"]["form_id"] == form.id
        and activity["data"]["values"]["message"] == "Hello <b>there</b>"
    )
    assert await harness.db.hits.count_documents({}) == 0
    assert "form_submitted" in [e["type"] for e in await harness.stream()]


async def test_mobile_app_posts_plain_fields_then_tracks_screens_with_the_same_cookies(harness):
    """mautic.addContact("myemail@somehwere.com", 3) then mautic.track("cart_screen", ...)."""
    form = await make_form(harness)
    await harness.field("email")
    async with harness.browser(user_agent="MyShop/3.1 CFNetwork/1410.0.3 Darwin/22.6.0") as app:
        response = await app.post(
            f"/form/submit?formId={form.id}",
            data={"email": "myemail@somewhere.com"},
            headers={"Accept": "application/json"},
        )
        assert response.json()["success"] == 1
        await harness.pixel(app, page_url="cart_screen", email="myemail@somewhere.com")
    assert await harness.db.contacts.count_documents({}) == 1
    hit = await harness.db.hits.find_one()
    assert hit["url"] == "cart_screen" and hit["contact_id"] == response.cookies["mtc_id"]


async def test_the_existing_identified_contact_survives(harness):
    """Unlike Mautic #16425: the anonymous session contact is merged into the known one."""
    form = await make_form(harness)
    await harness.field("email")
    async with harness.browser() as laptop:
        known = await harness.event(laptop, page_url="a", email="ann@example.com")
    async with harness.browser(FIREFOX) as phone:
        anonymous = await harness.event(phone, page_url="pricing")
        await phone.post(
            f"/form/submit?formId={form.id}&ajax=1", data=posted(form.id, email="ANN@example.com")
        )
    assert await harness.db.contacts.count_documents({}) == 1
    survivor = await harness.db.contacts.find_one()
    assert survivor["_id"] == known["id"]
    assert (await harness.db.merges.find_one({"_id": anonymous["id"]}))["winner_id"] == known["id"]
    assert await harness.db.hits.count_documents({"contact_id": known["id"]}) == 2


async def test_validation_errors(harness):
    form = await make_form(harness)
    body = (
        await harness.client.post("/form/submit?ajax=1", data=posted(form.id, email="not-an-email"))
    ).json()
    assert body["success"] == 0 and "email" in body["validationErrors"]
    body = (await harness.client.post("/form/submit?ajax=1", data=posted(form.id, firstname="Ann"))).json()
    assert body["validationErrors"] == {"email": "'Email' is required."}
    body = (await harness.client.post("/form/submit?ajax=1", data=posted(999, email="a@b.test"))).json()
    assert body == {"success": 0, "errorMessage": "This form is no longer available."}
    assert await harness.db.contacts.count_documents({}) == 0  # errors touch no contact


async def test_html_form_flow_with_return_url(harness):
    form = await make_form(harness, post_action="return", post_action_property="Thanks!")
    page = {"Origin": "https://site.test"}  # a browser posting the form from its page
    ok = await harness.client.post(
        "/form/submit",
        data={**posted(form.id, email="a@b.test"), "mauticform[return]": "https://site.test/contact"},
        headers=page,
    )
    assert (
        ok.status_code == 302
        and ok.headers["location"] == "https://site.test/contact?mauticMessage=Thanks%21"
    )
    bad = await harness.client.post(
        "/form/submit",
        data={**posted(form.id, email="nope"), "mauticform[return]": "https://site.test/c?x=1"},
        headers=page,
    )
    assert bad.status_code == 302
    assert bad.headers["location"].startswith("https://site.test/c?x=1&mauticError=Errors%3A")
    assert bad.headers["location"].endswith("#contactus")


@pytest.mark.parametrize(
    ("target", "headers", "followed"),
    [
        ("https://evil.example/phish", {"Origin": "https://site.test"}, False),
        ("javascript:alert(1)", {"Origin": "https://site.test"}, False),
        ("//evil.example/x", {"Origin": "https://site.test"}, False),
        ("https://site.test/contact", {}, False),  # nobody says which page posted it
        ("https://site.test/contact", {"Referer": "https://site.test/form?x=1"}, True),
        ("https://www.example.org/contact", {}, True),  # a tracked site (CM_CORS_ORIGINS)
    ],
)
async def test_the_return_url_is_followed_only_to_the_posting_page_or_a_tracked_site(
    harness, target, headers, followed
):
    form = await make_form(harness, post_action="return", post_action_property="Thanks!")
    response = await harness.client.post(
        "/form/submit",
        data={**posted(form.id, email="a@b.test"), "mauticform[return]": target},
        headers=headers,
    )
    if followed:
        assert response.status_code == 302 and response.headers["location"].startswith(target)
    else:
        assert response.status_code == 200 and "Thanks!" in response.text
        assert "location" not in response.headers


async def test_message_redirect_and_unpublished(harness):
    form = await make_form(harness)
    page = await harness.client.post("/form/submit", data=posted(form.id, email="a@b.test"))
    assert page.status_code == 200 and "Thank you!" in page.text
    redirecting = await make_form(
        harness, post_action="redirect", post_action_property="https://site.test/thanks"
    )
    moved = await harness.client.post("/form/submit", data=posted(redirecting.id, email="a@b.test"))
    assert moved.status_code == 302 and moved.headers["location"] == "https://site.test/thanks"
    await harness.services.storage.forms.set_published(form.id, False)
    closed = await harness.client.post("/form/submit", data=posted(form.id, email="a@b.test"))
    assert closed.status_code == 400 and "no longer available" in closed.text


async def test_bad_requests(harness):
    form = await make_form(harness)
    get = await harness.client.get(f"/form/submit?formId={form.id}")
    assert get.status_code == 405
    big = await harness.client.post(
        "/form/submit?ajax=1",
        content=b"x=" + b"y" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413 and big.json()["success"] == 0
    junk = await harness.client.post(
        "/form/submit?ajax=1",
        content=b"\xff\xfe=\x00",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert junk.status_code == 200 and junk.json()["errorMessage"] == "This form is no longer available."
    markup = await harness.client.post(
        "/form/submit", data=posted(form.id, email="a@b.test", firstname="<b>Ann</b>")
    )
    assert markup.status_code == 200
    assert (await harness.db.contacts.find_one())["fields"]["firstname"] == "Ann"


async def test_submissions_from_phones_use_the_device(harness):
    form = await make_form(harness)
    async with harness.browser(user_agent=IPHONE) as phone:
        await phone.post("/form/submit?ajax=1", data=posted(form.id, email="p@b.test"))
    device = await harness.db.devices.find_one()
    assert device["user_agent"]["device_type"] == "smartphone"


async def test_a_cors_wildcard_does_not_make_every_site_a_return_target(make_harness):
    async with make_harness(cors_origins=("*",)) as h:
        form = await make_form(h, post_action="return", post_action_property="Thanks!")
        response = await h.client.post(
            "/form/submit",
            data={**posted(form.id, email="a@b.test"), "mauticform[return]": "https://evil.example/x"},
        )
        assert response.status_code == 200 and "location" not in response.headers


async def test_a_multipart_form_as_mautic_renders_it_is_read(harness):
    """Mautic's form HTML posts multipart/form-data; a file field is ignored, the rest counts."""
    form = await make_form(harness)
    response = await harness.client.post(
        "/form/submit?ajax=1",
        data=posted(form.id, email="ann@example.com", firstname="Ann"),
        files={"mauticform[attachment]": ("cv.pdf", b"%PDF-1.4 not stored", "application/pdf")},
    )
    assert response.status_code == 200 and response.json()["success"] == 1, response.text
    contact = await harness.db.contacts.find_one({"fields.email": "ann@example.com"})
    assert contact is not None and contact["fields"]["firstname"] == "Ann"
    submitted = await harness.db.activities.find_one({"type": "form_submitted"})
    assert "attachment" not in submitted["data"]["values"]


async def test_a_broken_multipart_body_is_a_clear_refusal(harness):
    form = await make_form(harness)
    response = await harness.client.post(
        f"/form/submit?ajax=1&formId={form.id}",
        content=b"--x\r\nnot a part",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert response.status_code == 200
    assert response.json()["validationErrors"]["email"] == "'Email' is required."


def messenger_payload(page: str) -> dict:
    """What the answer page hands to its parent: the JSON string given to postMessage."""
    import json
    import re

    match = re.fullmatch(r'.*<script>parent\.postMessage\((".*"), "\*"\);</script>', page, re.S)
    assert match, page
    assert "</" not in match.group(1)  # nothing in the data can end the script element
    return json.loads(json.loads(match.group(1)))


async def test_mautic_form_script_gets_its_answer_through_the_messenger_page(harness):
    """Mautic's form script posts into a hidden iframe with mauticform[messenger]=1 and
    mauticform[formName], and waits for the page loaded there to call parent.postMessage with
    the JSON answer, keyed by formName: success with its message, or the errors by field."""
    form = await make_form(harness, post_action_property="Thanks </script><script>alert(1)</script>!")
    fields = posted(form.id, email="ann@example.com", messenger="1", formName="contactus")
    response = await harness.client.post(f"/form/submit?formId={form.id}", data=fields)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    body = messenger_payload(response.text)
    assert body["success"] == 1 and body["formName"] == "contactus"
    assert body["successMessage"] == "Thanks </script><script>alert(1)</script>!"
    assert await harness.db.contacts.count_documents({"fields.email": "ann@example.com"}) == 1

    invalid = posted(form.id, email="not an email", messenger="1", formName="contactus")
    errors = messenger_payload(
        (await harness.client.post(f"/form/submit?formId={form.id}", data=invalid)).text
    )
    assert errors["success"] == 0 and errors["formName"] == "contactus"
    assert set(errors["validationErrors"]) == {"email"}

    gone = posted(999, email="ann@example.com", messenger="1", formName="old_form")
    missing = messenger_payload((await harness.client.post("/form/submit?formId=999", data=gone)).text)
    assert missing == {
        "success": 0,
        "errorMessage": "This form is no longer available.",
        "formName": "old_form",
    }
