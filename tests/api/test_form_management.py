"""Forms managed through GraphQL (api/schema/forms.py): updateForm, deleteForm, kiosk mode and
publish windows, each seen from /form/submit, against the real app and SecantusDB."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import Api

CREATE = """mutation($up: DateTime, $down: DateTime, $kiosk: Boolean! = false) {
    createForm(name: "Signup", fields: [{name: "email", contactField: "email", required: true}],
               kiosk: $kiosk, publishUp: $up, publishDown: $down) {
        id name kiosk publishUp publishDown status fields { name } } }"""
UPDATE = """mutation($id: Int!, $name: String, $up: DateTime, $down: DateTime, $fields: [FormFieldInput!],
                  $message: String) {
    updateForm(id: $id, name: $name, publishUp: $up, publishDown: $down, fields: $fields,
               postActionProperty: $message) {
        id name publishUp publishDown status postActionProperty fields { name label } } }"""
TIMELINE = """query($id: ID!) { contact(id: $id) { email timeline(types: [FORM_SUBMITTED]) {
    edges { node { ... on FormSubmitted { formId formName values } } } } } }"""


async def submit(client: httpx.AsyncClient, form_id: int, **values: str) -> httpx.Response:
    data = {f"mauticform[{k}]": v for k, v in values.items()}
    return await client.post(
        f"/form/submit?formId={form_id}&ajax=1", data={**data, "mauticform[formId]": str(form_id)}
    )


def iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def create(api: Api, **variables: Any) -> dict[str, Any]:
    return dict((await api(CREATE, variables, role="admin"))["createForm"])


async def test_update_form_replaces_what_is_given_and_keeps_the_rest(api: Api) -> None:
    form = await create(api)
    fields = [
        {"name": "email", "contactField": "email", "required": True},
        {"name": "company", "label": "Firm"},
    ]
    variables = {"id": form["id"], "name": "Signup 2", "fields": fields, "message": "Welcome!"}
    assert await api.error(UPDATE, variables, role="write")  # admin only
    updated = (await api(UPDATE, variables, role="admin"))["updateForm"]
    assert updated["id"] == form["id"] and updated["name"] == "Signup 2"
    assert updated["fields"] == [{"name": "email", "label": "Email"}, {"name": "company", "label": "Firm"}]
    assert updated["postActionProperty"] == "Welcome!" and updated["status"] == "published"

    answer = (await submit(api.harness.client, form["id"], email="ann@example.com", company="Acme")).json()
    assert answer["success"] == 1 and answer["successMessage"] == "Welcome!"
    assert answer["results"] == {"email": "ann@example.com", "company": "Acme"}

    renamed = (await api(UPDATE, {"id": form["id"], "name": "Signup 3"}, role="admin"))["updateForm"]
    assert renamed["fields"] == updated["fields"]  # left out: kept
    for variables, words in (
        ({"id": form["id"], "name": None}, "name cannot be null"),
        ({"id": form["id"], "fields": [{"name": "Bad Name"}]}, "invalid form field name"),
        ({"id": form["id"], "message": "x" * 2001}, "at most 2000"),
    ):
        error = await api.error(UPDATE, variables, role="admin")
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and words in error["message"], error
    missing = await api.error(UPDATE, {"id": 999, "name": "x"}, role="admin")
    assert missing["extensions"]["code"] == "NOT_FOUND"


async def test_a_deleted_form_takes_nothing_more_and_its_submissions_stay(api: Api) -> None:
    form = await create(api)
    client = api.harness.client
    sent = await submit(client, form["id"], email="bob@example.com")
    contact_id = sent.cookies["mtc_id"]
    assert (await api("mutation($id: Int!) { deleteForm(id: $id) }", {"id": form["id"]}, role="admin")) == {
        "deleteForm": True
    }
    refused = (await submit(client, form["id"], email="carl@example.com")).json()
    assert refused == {
        "success": 0,
        "errorMessage": "This form is no longer available.",
        "formName": "signup",
    }
    assert (await api("{ forms { id } }"))["forms"] == []
    entries = (await api(TIMELINE, {"id": contact_id}))["contact"]["timeline"]["edges"]
    assert [e["node"]["formName"] for e in entries] == ["Signup"]
    for mutation in ("mutation($id: Int!) { deleteForm(id: $id) }", UPDATE):
        error = await api.error(mutation, {"id": form["id"]}, role="admin")
        assert error["extensions"]["code"] == "NOT_FOUND"
    assert await api.harness.db.contacts.count_documents({"ids": "email:carl@example.com"}) == 0


async def test_a_kiosk_form_never_touches_the_submitters_cookies_or_contact(api: Api) -> None:
    harness = api.harness
    form = await create(api, kiosk=True)
    assert form["kiosk"] is True
    async with harness.browser() as terminal:
        visited = await harness.event(terminal, page_url="https://shop.example.com/kiosk")
        jar = dict(terminal.cookies)
        first = await submit(terminal, form["id"], email="dana@example.com")
        second = await submit(terminal, form["id"], email="eve@example.com")
        for response in (first, second):
            assert response.json()["success"] == 1 and "set-cookie" not in response.headers
        assert dict(terminal.cookies) == jar
    dana = await harness.db.contacts.find_one({"ids": "email:dana@example.com"})
    eve = await harness.db.contacts.find_one({"ids": "email:eve@example.com"})
    assert dana and eve and len({dana["_id"], eve["_id"], visited["id"]}) == 3  # nobody merged
    terminal_contact = await harness.db.contacts.find_one({"_id": visited["id"]})
    assert terminal_contact["anonymous"] and "email" not in terminal_contact.get("fields", {})
    # The terminal's device stays its own visitor's.
    assert (
        await harness.db.devices.count_documents({"contact_id": dana["_id"], "_id": jar["mautic_device_id"]})
        == 0
    )
    entries = (await api(TIMELINE, {"id": dana["_id"]}))["contact"]["timeline"]["edges"]
    assert entries[0]["node"]["values"] == {"email": "dana@example.com"}


async def test_a_form_takes_submissions_only_inside_its_publish_window(api: Api) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    later, earlier = now + dt.timedelta(days=2), now - dt.timedelta(days=2)
    client = api.harness.client

    pending = await create(api, up=iso(later))
    assert pending["status"] == "pending" and pending["publishUp"].startswith(later.date().isoformat())
    answer = (await submit(client, pending["id"], email="fay@example.com")).json()
    assert answer["success"] == 0
    assert answer["errorMessage"] == f"This form will be available on {later:%Y-%m-%d %H:%M} UTC."

    expired = await create(api, down=iso(earlier))
    assert expired["status"] == "expired"
    answer = (await submit(client, expired["id"], email="fay@example.com")).json()
    assert answer["errorMessage"] == f"This form expired on {earlier:%Y-%m-%d %H:%M} UTC."

    opened = (await api(UPDATE, {"id": expired["id"], "down": None, "up": iso(earlier)}, role="admin"))[
        "updateForm"
    ]
    assert opened["status"] == "published" and opened["publishDown"] is None
    assert (await submit(client, expired["id"], email="fay@example.com")).json()["success"] == 1

    for variables, words in (
        ({"up": iso(later), "down": iso(earlier)}, "publishDown must be after publishUp"),
        ({"up": "2026-12-01T09:00:00"}, "needs a time zone"),
    ):
        error = await api.error(CREATE, variables, role="admin")
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and words in error["message"], error


README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


async def test_the_readme_form_management_example_works_as_written(api: Api) -> None:
    readme = README
    example = next(b for b in re.findall(r"```graphql\n(.*?)```", readme, re.S) if "updateForm(id: 1" in b)
    form = await create(api, down=iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=400)))
    assert form["id"] == 1  # the README's form: the first of a fresh database
    updated = (await api(example, role="admin"))["updateForm"]
    assert updated["name"] == "Newsletter (EN)" and updated["publishDown"] is None
    expected = (
        "pending" if dt.datetime.now(dt.UTC) < dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC) else "published"
    )
    assert updated["status"] == expected
    kiosk = next(b for b in re.findall(r"```graphql\n(.*?)```", readme, re.S) if "kiosk: true" in b)
    assert (await api(kiosk, role="admin"))["createForm"] == {"id": 2, "kiosk": True, "status": "published"}
    delete = next(b for b in re.findall(r"```graphql\n(.*?)```", readme, re.S) if "deleteForm(id: 2)" in b)
    assert (await api(delete, role="admin")) == {"deleteForm": True}  # verbatim, comment included
    assert [form["id"] for form in (await api("{ forms { id } }"))["forms"]] == [1]
