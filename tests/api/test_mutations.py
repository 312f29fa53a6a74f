"""Mutations: fields, tags, merges, custom activity and GDPR erasure - each on the activity stream."""

import pytest

UPDATE = """mutation($id: ID!, $fields: JSON!) { updateContact(id: $id, fields: $fields) {
    id email isAnonymous fields } }"""


async def test_update_contact_validates_and_publishes(api):
    h = api.harness
    contact = await h.event(page_url="p")
    data = await api(
        UPDATE,
        {"id": contact["id"], "fields": {"email": "Ann@Example.com", "firstname": "Ann"}},
        role="write",
    )
    updated = data["updateContact"]
    assert updated["email"] == "Ann@example.com" and updated["isAnonymous"] is False
    events = [e for e in await h.stream() if e["type"] in ("fields_updated", "contact_identified")]
    assert events[-1]["fields"] == {"email": "Ann@example.com", "firstname": "Ann"}
    # Removing a value with null; the unique key goes with it.
    cleared = (await api(UPDATE, {"id": contact["id"], "fields": {"email": None}}, role="write"))[
        "updateContact"
    ]
    assert cleared["email"] is None and cleared["isAnonymous"] is False  # firstname still identifies
    stored = await h.db.contacts.find_one({"_id": contact["id"]})
    assert "ids" not in stored


async def test_update_contact_errors(api):
    h = api.harness
    first = await h.event(page_url="p")
    async with h.browser() as other:
        second = await h.event(other, page_url="p")
    await api(UPDATE, {"id": first["id"], "fields": {"email": "taken@example.com"}}, role="write")
    cases = [
        ({"email": "not-an-email"}, "not a valid email"),
        ({"nope": "x"}, "no contact field 'nope'"),
        ({"email": "taken@example.com"}, "unique field"),
        ({"email": {"nested": 1}}, "expected a string"),
        ({}, "non-empty object"),
    ]
    for fields, message in cases:
        error = await api.error(UPDATE, {"id": second["id"], "fields": fields}, role="write")
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and message in error["message"], error
    missing = await api.error(UPDATE, {"id": "f" * 24, "fields": {"firstname": "x"}}, role="write")
    assert missing["extensions"]["code"] == "NOT_FOUND"
    untouched = await h.db.contacts.find_one({"_id": second["id"]})
    assert untouched["fields"].get("email") is None


async def test_tag_contact(api):
    h = api.harness
    contact = await h.event(page_url="p", tags="Old")
    query = 'mutation($id: ID!) { tagContact(id: $id, add: ["<b>New</b>", "VIP"], remove: ["old"]) { tags } }'
    assert sorted((await api(query, {"id": contact["id"]}, role="write"))["tagContact"]["tags"]) == [
        "New",
        "VIP",
    ]
    changed = [e for e in await h.stream() if e["type"] == "tags_changed"][-1]
    assert sorted(changed["added"]) == ["New", "VIP"] and changed["removed"] == ["Old"]


async def test_merge_contacts(api):
    h = api.harness
    await h.field("fingerprint", unique=True, type="text")
    async with h.browser() as one, h.browser() as two:
        winner = await h.event(one, page_url="a", tags="A", fingerprint="fp-w")
        loser = await h.event(two, page_url="b", tags="B")
    await api(UPDATE, {"id": loser["id"], "fields": {"email": "l@example.com"}}, role="write")
    query = "mutation($w: ID!, $l: ID!) { mergeContacts(winnerId: $w, loserId: $l) { id tags email } }"
    merged = (await api(query, {"w": winner["id"], "l": loser["id"]}, role="write"))["mergeContacts"]
    assert merged["id"] == winner["id"] and sorted(merged["tags"]) == ["A", "B"]
    assert merged["email"] == "l@example.com"  # the loser's values fill the winner's gaps
    survivor = await h.db.contacts.find_one({"_id": winner["id"]})
    assert sorted(survivor["ids"]) == ["email:l@example.com", "fingerprint:fp-w"]
    assert await h.db.hits.count_documents({"contact_id": winner["id"]}) == 2
    same = await api.error(query, {"w": winner["id"], "l": loser["id"]}, role="write")
    assert same["extensions"]["code"] == "BAD_USER_INPUT"  # the loser id now resolves to the winner
    assert any(e["type"] == "contact_merged" for e in await h.stream())


MERGE = """mutation($w: ID!, $l: ID!) {
  mergeContacts(winnerId: $w, loserId: $l) { id email isAnonymous identifiedAt }
}"""
CONTACT = "query($id: ID!) { contact(id: $id) { id email isAnonymous identifiedAt } }"


@pytest.mark.parametrize("identified", ["winner", "loser"])
async def test_merge_leaves_the_survivor_identified_whichever_side_was(api, identified):
    """An identified contact merged with an anonymous one, in both directions: the survivor is
    identified, with the identified side's identifiedAt (the loser's values fill the winner's gaps)."""
    h = api.harness
    async with h.browser() as one, h.browser() as two:
        anonymous = await h.event(one, page_url="a")
        known = await h.event(two, page_url="b")
    await api(UPDATE, {"id": known["id"], "fields": {"email": "k@example.com"}}, role="write")
    before = (await api(CONTACT, {"id": known["id"]}))["contact"]
    assert before["isAnonymous"] is False and before["identifiedAt"]
    winner, loser = (known, anonymous) if identified == "winner" else (anonymous, known)
    merged = (await api(MERGE, {"w": winner["id"], "l": loser["id"]}, role="write"))["mergeContacts"]
    assert merged["id"] == winner["id"]
    assert merged["email"] == "k@example.com"
    assert merged["isAnonymous"] is False
    assert merged["identifiedAt"] == before["identifiedAt"]
    stored = (await api(CONTACT, {"id": loser["id"]}))["contact"]  # the loser id resolves to it
    assert stored == merged


async def test_merging_two_anonymous_contacts_keeps_the_survivor_anonymous(api):
    h = api.harness
    async with h.browser() as one, h.browser() as two:
        a = await h.event(one, page_url="a")
        b = await h.event(two, page_url="b")
    merged = (await api(MERGE, {"w": a["id"], "l": b["id"]}, role="write"))["mergeContacts"]
    assert merged["isAnonymous"] is True and merged["identifiedAt"] is None and merged["email"] is None


async def test_record_activity_by_id_and_by_new_email(api):
    h = api.harness
    contact = await h.event(page_url="p")
    query = """mutation($ref: ContactRef!, $at: DateTime) { recordActivity(contact: $ref, type: "code_submission",
        properties: {repo: "x/y", lines: 42}, occurredAt: $at) { type properties occurredAt } }"""
    by_id = await api(query, {"ref": {"id": contact["id"]}, "at": "2026-01-02T03:04:05+00:00"}, role="write")
    assert by_id["recordActivity"] == {
        "type": "code_submission",
        "properties": {"repo": "x/y", "lines": 42},
        "occurredAt": "2026-01-02T03:04:05+00:00",
    }
    await api(query, {"ref": {"email": "new@example.com"}}, role="write")
    created = await h.db.contacts.find_one({"fields.email": "new@example.com"})
    assert created["anonymous"] is False and created["ids"] == ["email:new@example.com"]
    await api(query, {"ref": {"email": "NEW@example.com"}}, role="write")
    assert await h.db.contacts.count_documents({"fields.email": "new@example.com"}) == 1
    custom = [e for e in await h.stream() if e["type"] == "custom_activity"]
    assert len(custom) == 3 and custom[0]["properties"] == {"repo": "x/y", "lines": 42}


async def test_record_activity_errors(api):
    query = "mutation($ref: ContactRef!, $type: String!, $p: JSON) { recordActivity(contact: $ref, type: $type, properties: $p) { type } }"
    cases = [
        ({"ref": {"email": "x@example.com"}, "type": "has space"}, "BAD_USER_INPUT"),
        ({"ref": {"email": "x@example.com"}, "type": "t", "p": [1, 2]}, "BAD_USER_INPUT"),
        ({"ref": {"email": "x@example.com"}, "type": "t", "p": {"big": "x" * 20000}}, "BAD_USER_INPUT"),
        ({"ref": {"email": "not an email"}, "type": "t"}, "BAD_USER_INPUT"),
        ({"ref": {"id": "0" * 24}, "type": "t"}, "NOT_FOUND"),
    ]
    for variables, code in cases:
        assert (await api.error(query, variables, role="write"))["extensions"]["code"] == code
    both = await api.error(query, {"ref": {"id": "a", "email": "b@example.com"}, "type": "t"}, role="write")
    assert both["extensions"]["code"] == "BAD_USER_INPUT"


async def test_delete_contact_erases_everything(api):
    h = api.harness
    await h.field("email")
    async with h.browser() as one:
        keep = await h.event(one, page_url="keep")
    async with h.browser() as laptop:
        ann = await h.event(
            laptop, page_url="https://s.test/?utm_source=x", email="ann@example.com", tags="VIP"
        )
    async with h.browser() as phone:
        old = await h.event(phone, page_url="phone")
        await h.event(phone, page_url="login", email="ann@example.com")  # merges `old` into ann
    await api(RECORD_ACTIVITY, {"id": ann["id"]}, role="write")
    query = "mutation($id: ID!) { deleteContact(id: $id) }"
    assert (await api(query, {"id": ann["id"]}, role="write"))["deleteContact"] is True

    for collection in ("hits", "devices", "utm_records", "activities"):
        assert await h.db[collection].count_documents({"contact_id": ann["id"]}) == 0, collection
    assert await h.db.contacts.count_documents({"_id": ann["id"]}) == 0
    assert await h.db.merges.count_documents({}) == 0
    assert (await api("query($id: ID!) { contact(id: $id) { id } }", {"id": old["id"]}))["contact"] is None
    stream = await h.stream()
    assert not [
        e for e in stream if e["contact_id"] in (ann["id"], old["id"]) and e["type"] != "contact_deleted"
    ]
    assert "ann@example.com" not in str(stream)
    assert stream[-1] == {**stream[-1], "type": "contact_deleted", "contact_id": ann["id"], "contact": None}
    audit = await h.db.audit.find_one({"action": "erase"})
    assert audit["hits"] == 3 and "ann@example.com" not in str(audit)
    assert await h.db.hits.count_documents({"contact_id": keep["id"]}) == 1  # others untouched
    again = await api.error(query, {"id": ann["id"]}, role="write")
    assert again["extensions"]["code"] == "NOT_FOUND"


RECORD_ACTIVITY = 'mutation($id: ID!) { recordActivity(contact: {id: $id}, type: "chat", properties: {text: "hi"}) { type } }'


async def test_field_admin_mutations(api):
    create = 'mutation { createField(alias: "member_no", type: "text", unique: true, publiclyUpdatable: true) { alias unique publiclyUpdatable } }'
    assert (await api(create, role="admin"))["createField"] == {
        "alias": "member_no",
        "unique": True,
        "publiclyUpdatable": True,
    }
    error = await api.error(create, role="admin")
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and "already exists" in error["message"]
    update = 'mutation { updateField(alias: "email", publiclyUpdatable: true, label: "E-mail") { label publiclyUpdatable } }'
    assert (await api(update, role="admin"))["updateField"] == {"label": "E-mail", "publiclyUpdatable": True}
    bad = await api.error('mutation { createField(alias: "x", type: "colour") { alias } }', role="admin")
    assert bad["extensions"]["code"] == "BAD_USER_INPUT"


async def test_forms_through_the_api_and_on_the_timeline(api):
    create = """mutation { createForm(name: "Newsletter", fields: [
        {name: "email", contactField: "email", required: true}, {name: "topic", label: "Topic"}]) {
        id name fields { name label contactField required } postAction published } }"""
    assert (await api.error(create, role="write"))["extensions"]["code"] == "FORBIDDEN"
    form = (await api(create, role="admin"))["createForm"]
    assert form["fields"] == [
        {"name": "email", "label": "Email", "contactField": "email", "required": True},
        {"name": "topic", "label": "Topic", "contactField": None, "required": False},
    ]
    assert (await api("{ forms { id name } }"))["forms"] == [{"id": form["id"], "name": "Newsletter"}]
    bad = await api.error(
        'mutation { createForm(name: "x", fields: [{name: "a", contactField: "nope"}]) { id } }', role="admin"
    )
    assert bad["extensions"]["code"] == "BAD_USER_INPUT" and "nope" in bad["message"]

    response = await api.harness.client.post(
        f"/form/submit?formId={form['id']}&ajax=1",
        data={
            "mauticform[email]": "sub@example.com",
            "mauticform[topic]": "python",
            "mauticform[formId]": str(form["id"]),
        },
    )
    contact_id = response.cookies["mtc_id"]
    query = """query($id: ID!) { contact(id: $id) { email timeline(types: [FORM_SUBMITTED]) { edges { node {
        ... on FormSubmitted { formId formName values } } } } } }"""
    data = (await api(query, {"id": contact_id}))["contact"]
    assert data["email"] == "sub@example.com"
    assert data["timeline"]["edges"][0]["node"] == {
        "formId": form["id"],
        "formName": "Newsletter",
        "values": {"email": "sub@example.com", "topic": "python"},
    }
    closed = await api(
        f"mutation {{ setFormPublished(id: {form['id']}, published: false) {{ published }} }}", role="admin"
    )
    assert closed["setFormPublished"]["published"] is False
    missing = await api.error("mutation { setFormPublished(id: 999, published: true) { id } }", role="admin")
    assert missing["extensions"]["code"] == "NOT_FOUND"


async def test_update_field_unique_reindexes_existing_contacts(api):
    h = api.harness
    await h.field("member_no", public=False, type="text")
    contact = await h.event(page_url="p")
    await api(UPDATE, {"id": contact["id"], "fields": {"member_no": "M-7"}}, role="write")
    toggle = 'mutation($u: Boolean) { updateField(alias: "member_no", unique: $u) { unique } }'
    assert (await api(toggle, {"u": True}, role="admin"))["updateField"]["unique"] is True
    assert (await h.db.contacts.find_one({"_id": contact["id"]}))["ids"] == ["member_no:m-7"]
    await api(toggle, {"u": False}, role="admin")
    assert "ids" not in await h.db.contacts.find_one({"_id": contact["id"]})


async def test_a_change_of_case_keeps_the_unique_key(api):
    """`Ann@x.test` -> `ann@x.test` is the same key: the contact stays findable and unique."""
    h = api.harness
    await h.field("email", public=True, unique=True)
    first = await h.event(page_url="p", email="Ann@x.test")
    await api(UPDATE, {"id": first["id"], "fields": {"email": "ann@x.test"}}, role="write")
    stored = await h.db.contacts.find_one({"_id": first["id"]})
    assert stored["ids"] == ["email:ann@x.test"] and stored["fields"]["email"] == "ann@x.test"
    async with h.browser() as other:  # another browser with the email finds the same contact
        again = await h.event(other, page_url="q", email="ANN@x.test")
    assert again["id"] == first["id"]


async def test_erasure_removes_entries_still_waiting_for_redis(api):
    """Entries of the contact that wait in the outbox (Redis was down) never reach the stream
    after the contact is erased: they leave the outbox and are marked as appended."""
    import json

    h = api.harness
    ann = await h.event(page_url="p")
    other = await h.event(h.client, page_url="q")  # same browser: same contact, for a second entry
    assert other["id"] == ann["id"]
    event = json.dumps({"type": "page_hit", "contact_id": ann["id"], "hit": {"url": "waiting"}})
    await h.services.storage.outbox.add(h.settings.stream_key, [(event, [ann["id"]])])
    query = "mutation($id: ID!) { deleteContact(id: $id) }"
    assert (await api(query, {"id": ann["id"]}, role="write"))["deleteContact"] is True
    assert await h.services.storage.outbox.for_contacts([ann["id"]]) == []
    entries = [json.loads(fields[b"event"]) for _, fields in await h.redis.xrange(h.settings.stream_key)]
    assert not [e for e in entries if e.get("contact_id") == ann["id"] and e["type"] != "contact_deleted"]
