"""Merges racing other writes, against the real database (issue 9, "Exact merges"): no hit,
device or timeline entry stays under a merged-away id, erasure leaves nothing of either, and
two opposite merges of the same contacts never delete both."""

from __future__ import annotations

import asyncio

from tests.conftest import CHROME


async def admin(h) -> dict[str, str]:
    key = await h.services.storage.api_keys.create("admin", "admin")
    return {"Authorization": f"Bearer {key}"}


async def merge(h, headers, winner: str, loser: str) -> dict:
    mutation = "mutation($w: ID!, $l: ID!) { mergeContacts(winnerId: $w, loserId: $l) { id } }"
    response = await h.client.post(
        "/graphql", json={"query": mutation, "variables": {"w": winner, "l": loser}}, headers=headers
    )
    assert response.status_code in (200, 409), response.text
    return response.json()


async def owned(h, *contact_ids: str) -> dict[str, int]:
    query = {"contact_id": {"$in": list(contact_ids)}}
    return {name: await h.db[name].count_documents(query) for name in ("hits", "devices", "activities")}


async def browse(h, visitor, path: str, browsing: asyncio.Event, *, after: int) -> None:
    """Page after page, as a browser loads them; `browsing` is set after the first few."""
    for i in range(30):
        await h.pixel(visitor, page_url=f"https://shop.example.com/{path}/{i}")
        if i == after:
            browsing.set()


async def merge_when(browsing: asyncio.Event, h, headers, winner: str, loser: str) -> dict:
    await browsing.wait()
    return await merge(h, headers, winner, loser)


async def test_hits_arriving_during_a_merge_all_end_on_the_survivor(harness):
    """A visitor keeps loading pages while an operator merges them into a known contact. Hits
    resolved to the loser just before the merge are stored just after it: the sweep after each
    batch moves them, so every hit ends on the survivor; erasing it leaves nothing of either."""
    h = harness
    headers = await admin(h)
    known = await h.event(page_url="https://shop.example.com/known")
    for attempt in range(5):  # the interleaving is the event loop's: a few rounds
        async with h.browser(CHROME, ip=f"198.51.100.{attempt + 1}") as visitor:
            loser = (await h.event(visitor, page_url="https://shop.example.com/first"))["id"]
            browsing = asyncio.Event()
            _, merged = await asyncio.gather(
                browse(h, visitor, f"{attempt}", browsing, after=3 + attempt),
                merge_when(browsing, h, headers, known["id"], loser),
            )
            assert "errors" not in merged, merged
        assert await owned(h, loser) == {"hits": 0, "devices": 0, "activities": 0}
    assert await h.db.hits.count_documents({"contact_id": known["id"]}) == 1 + 5 * 31

    response = await h.client.post(
        "/graphql",
        json={"query": "mutation($id: ID!) { deleteContact(id: $id) }", "variables": {"id": known["id"]}},
        headers=headers,
    )
    assert response.json()["data"]["deleteContact"] is True
    merged = [doc["_id"] async for doc in h.db.merges.find()]
    assert merged == []
    assert await h.db.hits.count_documents({}) == 0
    assert await h.db.devices.count_documents({}) == 0


async def test_opposite_merges_at_once_keep_one_contact(harness):
    """mergeContacts(A, B) and mergeContacts(B, A) at the same moment: at most one goes on (the
    other answers CONFLICT or NOT_FOUND); one contact remains, holding the history of both, and
    both ids resolve to it."""
    h = harness
    headers = await admin(h)
    for _ in range(5):
        async with h.browser() as one, h.browser() as two:
            a = (await h.event(one, page_url="https://shop.example.com/a"))["id"]
            b = (await h.event(two, page_url="https://shop.example.com/b"))["id"]
        first, second = await asyncio.gather(merge(h, headers, a, b), merge(h, headers, b, a))
        outcomes = [
            "ok" if "errors" not in result else result["errors"][0]["extensions"]["code"]
            for result in (first, second)
        ]
        assert outcomes.count("ok") <= 1 and set(outcomes) <= {"ok", "CONFLICT", "NOT_FOUND"}, outcomes
        remaining = [doc async for doc in h.db.contacts.find({"_id": {"$in": [a, b]}})]
        if "ok" not in outcomes:  # both refused (each saw the other's mark): nothing changed
            assert len(remaining) == 2 and not any("merging" in doc for doc in remaining)
            continue
        assert len(remaining) == 1, outcomes
        survivor = remaining[0]["_id"]
        assert await h.db.hits.count_documents({"contact_id": survivor}) == 2
        for contact_id in (a, b):
            assert (await h.services.storage.contacts.resolve(contact_id))["_id"] == survivor


async def test_one_request_naming_two_contacts_values_is_recorded_once(harness):
    """email names K, member_no names P (a newer contact): the visitor is merged into K (the
    oldest holder), member_no stays P's (a warning says so), and the merge's activity is on the
    stream. This was a 503 with the merge done and its activity lost, retried forever."""
    h = harness
    await h.field("email", unique=True)
    await h.field("member_no", unique=True, type="text", label="Member")
    async with h.browser() as one:
        k = await h.event(one, page_url="https://shop.example.com/k", email="k@example.com")
    async with h.browser() as two:
        p = await h.event(two, page_url="https://shop.example.com/p", member_no="77")
    async with h.browser() as three:
        visitor = await h.event(three, page_url="https://shop.example.com/v")
        body = await h.event(
            three, page_url="https://shop.example.com/w", email="k@example.com", member_no="77"
        )
    assert body["id"] == k["id"]
    assert body["warnings"] == ["field 'member_no' was not applied: its value belongs to another contact"]
    assert "member_no" not in (await h.db.contacts.find_one({"_id": k["id"]}))["fields"]
    assert (await h.db.contacts.find_one({"_id": p["id"]}))["fields"]["member_no"] == "77"
    merged = [e for e in await h.stream() if e["type"] == "contact_merged"]
    assert [(e["contact_id"], e["merged_id"]) for e in merged] == [(k["id"], visitor["id"])]


async def test_an_anonymous_visitor_and_a_new_browser_send_one_new_email_at_once(harness):
    """Whichever request writes the email first, the other finds that contact: one contact
    holds the email, every hit of both browsers is on it, and the visitor's old id resolves to it."""
    h = harness
    await h.field("email", unique=True)
    for round_ in range(5):
        email = f"race{round_}@example.com"
        async with h.browser() as visitor, h.browser(ip="198.51.100.7") as newcomer:
            known = await h.event(visitor, page_url="https://shop.example.com/before")
            await h.pixel(visitor, page_url="https://shop.example.com/before-2")
            first, second = await asyncio.gather(
                h.event(visitor, page_url="https://shop.example.com/v", email=email),
                h.event(newcomer, page_url="https://shop.example.com/n", email=email),
            )
        holders = [doc["_id"] async for doc in h.db.contacts.find({"ids": f"email:{email}"})]
        assert len(holders) == 1 and first["id"] == second["id"] == holders[0]
        assert (await h.services.storage.contacts.resolve(known["id"]))["_id"] == holders[0]
        assert await h.db.hits.count_documents({"contact_id": holders[0]}) == 4


async def test_the_writes_of_a_merge_are_all_or_nothing(harness):
    """On a deployment with transactions (SecantusDB, replica sets) the merge's writes commit
    together: an interruption after the first leaves nothing (without a transaction the merge
    record would stay)."""
    import pytest

    from contact_monitor.core.activity import now_ms
    from contact_monitor.core.identity import in_transaction

    storage = harness.services.storage

    async def interrupted(session):
        await storage.contacts.record_merge("a" * 24, "b" * 24, now_ms(), session=session)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        await in_transaction(storage, interrupted)
    assert await harness.db.merges.count_documents({}) == 0


async def test_the_periodic_sweep_moves_what_a_failed_sweep_left(harness):
    """A write whose own sweep failed (the state is made here directly in MongoDB) is moved by
    the periodic sweep of recent merges; an old merge is not looked at again."""
    import datetime as dt

    from contact_monitor.core.activity import now_ms
    from contact_monitor.core.identity import SWEEP_WINDOW, sweep_recent_merges

    h = harness
    headers = await admin(h)
    async with h.browser() as one, h.browser() as two:
        a = (await h.event(one, page_url="https://shop.example.com/a"))["id"]
        b = (await h.event(two, page_url="https://shop.example.com/b"))["id"]
    assert "errors" not in await merge(h, headers, a, b)
    await h.db.hits.insert_one({"contact_id": b, "url": "stranded", "occurred_at": now_ms()})
    assert (
        await sweep_recent_merges(h.services.storage, now_ms() + SWEEP_WINDOW + dt.timedelta(seconds=1)) == 0
    )
    assert await h.db.hits.count_documents({"contact_id": b}) == 1
    assert await sweep_recent_merges(h.services.storage, now_ms()) == 1
    assert await h.db.hits.count_documents({"contact_id": b}) == 0
    assert await h.db.hits.count_documents({"contact_id": a}) == 3
