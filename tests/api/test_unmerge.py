"""Merge audit and undo (issue 9, item 3): `merges(contactId)` lists every merge with what the
merged contact looked like; admin `unmergeContact(mergeId)` gives back exactly the contacts that
were there."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import IPHONE

COMPARED = ("_id", "fields", "tags", "ids", "anonymous", "identified_at", "created_at", "last_ip", "claims")


async def gql(h, query: str, role: str = "admin", **variables: Any) -> dict:
    key = await h.services.storage.api_keys.create(f"test-{role}-{uuid.uuid4().hex}", role)
    response = await h.client.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def snapshot(contact: dict) -> dict:
    return {key: contact.get(key) for key in COMPARED}


async def documents_of(h, contact_id: str) -> dict[str, set]:
    """Ids of the contact's hits, devices and timeline entries (but the undo's own entries)."""
    found = {}
    for name in ("hits", "devices", "activities"):
        query: dict[str, Any] = {"contact_id": contact_id}
        if name == "activities":
            query["type"] = {"$ne": "contact_unmerged"}
        found[name] = {doc["_id"] async for doc in h.db[name].find(query)}
    return found


MERGES = """query($id: ID!) { merges(contactId: $id) {
  id winnerId loserId mergedAt undoneAt loserFields loserTags hitsMoved devicesMoved } }"""
UNMERGE = "mutation($id: ID!) { unmergeContact(mergeId: $id) { id email tags } }"


async def test_an_operator_undoes_a_tracking_merge_exactly(harness):
    """An anonymous visitor with pages, a tag and a device types a known email: merged. Undone,
    both contacts are as they were, each with its own hits, devices and timeline; the visitor's
    browser is the visitor again; a hit of the survivor recorded after the merge stays with it."""
    h = harness
    await h.field("email", unique=True)
    await h.field("firstname")
    async with h.browser(IPHONE) as known_browser:
        known = await h.event(
            known_browser, page_url="https://shop.example.com/k", email="k@example.com", tags="vip"
        )
    async with h.browser() as visitor:
        anonymous = await h.event(
            visitor, page_url="https://shop.example.com/a", firstname="Ann", tags="trial"
        )
        await h.pixel(visitor, page_url="https://shop.example.com/b")
        before = {
            contact_id: snapshot(await h.db.contacts.find_one({"_id": contact_id}))
            for contact_id in (known["id"], anonymous["id"])
        }
        owned = {
            contact_id: await documents_of(h, contact_id) for contact_id in (known["id"], anonymous["id"])
        }

        merged = await h.event(visitor, page_url="https://shop.example.com/c", email="k@example.com")
        assert merged["id"] == known["id"]
        survivor = await h.db.contacts.find_one({"_id": known["id"]})
        assert survivor["fields"]["firstname"] == "Ann" and sorted(survivor["tags"]) == ["trial", "vip"]

        [entry] = (await gql(h, MERGES, role="read", id=anonymous["id"]))["data"]["merges"]
        assert (entry["winnerId"], entry["loserId"], entry["undoneAt"]) == (
            known["id"],
            anonymous["id"],
            None,
        )
        assert entry["loserFields"] == {"firstname": "Ann"} and entry["loserTags"] == ["trial"]
        assert entry["hitsMoved"] == 2 and entry["devicesMoved"] == 1

        result = await gql(h, UNMERGE, id=entry["id"])
        assert result["data"]["unmergeContact"]["id"] == anonymous["id"], result

        for contact_id, was in before.items():
            assert snapshot(await h.db.contacts.find_one({"_id": contact_id})) == was
        assert await documents_of(h, anonymous["id"]) == owned[anonymous["id"]]
        after_merge = await documents_of(h, known["id"])
        assert owned[known["id"]]["hits"] < after_merge["hits"]  # the hit of the merge stays
        assert after_merge["devices"] == owned[known["id"]]["devices"]

        again = await h.event(visitor, page_url="https://shop.example.com/d")
        assert again["id"] == anonymous["id"]
    assert (await h.services.storage.contacts.resolve(anonymous["id"]))["_id"] == anonymous["id"]

    [entry] = (await gql(h, MERGES, role="read", id=known["id"]))["data"]["merges"]
    assert entry["undoneAt"] is not None
    again = await gql(h, UNMERGE, id=entry["id"])
    assert again["errors"][0]["message"] == "this merge was undone already"
    unmerged = [e for e in await h.stream() if e["type"] == "contact_unmerged"]
    assert {e["contact_id"] for e in unmerged} == {known["id"], anonymous["id"]}


async def test_nested_merges_are_undone_newest_first(harness):
    """A into B, then B into C: undoing A into B first is refused (B is gone); undoing B into C
    and then A into B gives back all three."""
    h = harness
    ids = {}
    for name in "abc":
        async with h.browser() as browser:
            ids[name] = (await h.event(browser, page_url=f"https://shop.example.com/{name}"))["id"]
    merge = "mutation($w: ID!, $l: ID!) { mergeContacts(winnerId: $w, loserId: $l) { id } }"
    await gql(h, merge, w=ids["b"], l=ids["a"])
    await gql(h, merge, w=ids["c"], l=ids["b"])
    entries = (await gql(h, MERGES, role="read", id=ids["c"]))["data"]["merges"]
    by_loser = {entry["loserId"]: entry["id"] for entry in entries}
    assert set(by_loser) == {ids["a"], ids["b"]}

    refused = await gql(h, UNMERGE, id=by_loser[ids["a"]])
    assert "undo that merge first" in refused["errors"][0]["message"]
    await gql(h, UNMERGE, id=by_loser[ids["b"]])
    await gql(h, UNMERGE, id=by_loser[ids["a"]])
    for name in "abc":
        assert await h.db.hits.count_documents({"contact_id": ids[name]}) == 1
        assert (await h.services.storage.contacts.resolve(ids[name]))["_id"] == ids[name]


async def test_unmerge_needs_the_admin_role_and_a_known_merge(harness):
    h = harness
    denied = await gql(h, UNMERGE, role="write", id="0" * 24)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    for unknown in ("0" * 24, "not-an-id"):
        missing = await gql(h, UNMERGE, id=unknown)
        assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_erasure_removes_the_merge_log(harness):
    """The log keeps what merged contacts looked like: erasing the survivor erases it."""
    h = harness
    async with h.browser() as one, h.browser() as two:
        a = (await h.event(one, page_url="https://shop.example.com/a"))["id"]
        b = (await h.event(two, page_url="https://shop.example.com/b"))["id"]
    await gql(h, "mutation($w: ID!, $l: ID!) { mergeContacts(winnerId: $w, loserId: $l) { id } }", w=a, l=b)
    assert await h.db.merge_log.count_documents({}) == 1
    await gql(h, "mutation($id: ID!) { deleteContact(id: $id) }", id=a)
    assert await h.db.merge_log.count_documents({}) == 0


async def test_every_process_sends_the_visitor_back_after_an_undo(make_harness):
    """Process b holds the visitor's device as the survivor's (it served a hit after the
    merge); the undo made in process a is announced, and b's next hit from that browser is the
    restored contact's."""
    import asyncio

    import httpx

    from tests.conftest import BASE_URL, CHROME

    async with make_harness() as a, make_harness() as b:
        await a.field("email", unique=True)
        transport = httpx.ASGITransport(app=b.app, client=("203.0.113.10", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers={"User-Agent": CHROME}
        ) as browser:
            known = await b.event(page_url="https://shop.example.com/k", email="k@example.com")
            visitor = await b.event(browser, page_url="https://shop.example.com/v")
            await b.event(browser, page_url="https://shop.example.com/w", email="k@example.com")
            await b.pixel(browser, page_url="https://shop.example.com/x")  # b: the device is known's
            [entry] = (await gql(a, MERGES, role="read", id=known["id"]))["data"]["merges"]
            devices = b.services.storage.devices
            assert (await devices.get(browser.cookies["mautic_device_id"]))["contact_id"] == known["id"]
            cached = b.pipeline.identity.devices
            assert cached.get(browser.cookies["mautic_device_id"]) is not None
            cached.cleared.clear()
            await gql(a, UNMERGE, id=entry["id"])
            await asyncio.wait_for(cached.cleared.wait(), 10)  # a's announcement reached b
            back = await b.event(browser, page_url="https://shop.example.com/y")
            assert back["id"] == visitor["id"]


async def test_an_undo_that_cannot_complete_changes_nothing(harness):
    """The merged contact's email was given to another contact since: the undo is refused, the
    survivor and the merge stay as they are, and it can be undone once the email is free."""
    h = harness
    await h.field("email", unique=True)
    async with h.browser() as one, h.browser() as two, h.browser() as three:
        survivor = (await h.event(one, page_url="https://shop.example.com/w"))["id"]
        merged = (await h.event(two, page_url="https://shop.example.com/l", email="l@example.com"))["id"]
        await gql(
            h,
            "mutation($w: ID!, $l: ID!) { mergeContacts(winnerId: $w, loserId: $l) { id } }",
            w=survivor,
            l=merged,
        )
        change = 'mutation($id: ID!) { updateContact(id: $id, fields: {email: "new@example.com"}) { id } }'
        assert "errors" not in await gql(h, change, id=survivor)
        taker = (await h.event(three, page_url="https://shop.example.com/z", email="l@example.com"))["id"]
    before = await h.db.contacts.find_one({"_id": survivor})
    [entry] = (await gql(h, MERGES, role="read", id=survivor))["data"]["merges"]
    refused = await gql(h, UNMERGE, id=entry["id"])
    assert refused["errors"][0]["message"] == (
        f"the merged contact's email now belongs to contact {taker}: change or merge that contact first"
    )
    assert await h.db.contacts.find_one({"_id": survivor}) == before
    assert await h.db.contacts.find_one({"_id": merged}) is None
    assert (await gql(h, MERGES, role="read", id=survivor))["data"]["merges"][0]["undoneAt"] is None

    free = "mutation($id: ID!) { updateContact(id: $id, fields: {email: null}) { id } }"
    assert "errors" not in await gql(h, free, id=taker)
    assert (await gql(h, UNMERGE, id=entry["id"]))["data"]["unmergeContact"]["email"] == "l@example.com"
