"""Who is the visitor: devices, cookies, unique fields, merges, switches."""

import datetime as dt

import pytest

from contact_monitor.settings import Settings, SettingsError
from tests.conftest import FIREFOX


async def test_device_cookie_keeps_one_contact(harness):
    first = await harness.event(page_url="a")
    second = await harness.event(page_url="b")
    assert first["id"] == second["id"] and first["device_id"] == second["device_id"]
    assert first["sid"] == first["device_id"] and len(first["device_id"]) == 23


async def test_two_browsers_are_two_contacts(harness):
    async with harness.browser() as one, harness.browser(FIREFOX) as two:
        a = await harness.event(one, page_url="a")
        b = await harness.event(two, page_url="a")
    assert a["id"] != b["id"]


async def test_device_id_parameter_identifies_without_cookies(harness):
    first = await harness.event(page_url="a")
    async with harness.browser() as cookieless:
        again = await harness.event(cookieless, page_url="b", mautic_device_id=first["device_id"])
    assert again["id"] == first["id"]


async def test_forged_device_id_is_a_new_visitor(harness):
    forged = "a" * 23
    body = await harness.event(page_url="a", mautic_device_id=forged)
    assert body["device_id"] != forged
    assert await harness.db.devices.count_documents({"_id": forged}) == 0
    malformed = await harness.event(page_url="a", mautic_device_id="../../etc/passwd")
    assert malformed["id"] == body["id"]  # falls back to the cookie


async def test_mtc_endpoint_creates_an_anonymous_contact_once(harness):
    first = (await harness.client.get("/mtc")).json()
    second = (await harness.client.get("/mtc")).json()
    assert set(first) == {"id", "sid", "device_id"}
    assert first == second
    contact = await harness.db.contacts.find_one({"_id": first["id"]})
    assert contact["anonymous"] is True and contact["identified_at"] is None
    assert await harness.db.hits.count_documents({}) == 0


async def test_email_is_ignored_until_publicly_updatable(harness):
    await harness.pixel(page_url="a", email="ann@example.com")
    contact = await harness.db.contacts.find_one()
    assert "email" not in contact["fields"] and contact["anonymous"]


async def test_anonymous_visitor_identified_by_a_new_email(harness):
    await harness.field("email")
    await harness.pixel(page_url="a")
    await harness.pixel(page_url="b", email="Ann@Example.COM", firstname="Ann")
    contact = await harness.db.contacts.find_one()
    assert contact["fields"]["email"] == "Ann@example.com"
    assert "firstname" not in contact["fields"]  # not publicly updatable
    assert contact["anonymous"] is False and contact["identified_at"] is not None
    assert contact["ids"] == ["email:ann@example.com"]
    types = [e["type"] for e in await harness.stream()]
    assert "contact_identified" in types and "fields_updated" in types


async def test_anonymous_history_is_merged_into_the_existing_contact(harness):
    await harness.field("email")
    async with harness.browser() as laptop:
        known = await harness.event(laptop, page_url="signup", email="ann@example.com", tags="Customer")
    async with harness.browser(FIREFOX) as phone:
        anonymous = await harness.event(phone, page_url="https://s.test/?utm_source=ads", tags="Visitor")
        await harness.event(phone, page_url="pricing")
        identified = await harness.event(phone, page_url="login", email="ANN@example.com")
        assert identified["id"] == known["id"]
        assert identified["device_id"] == anonymous["device_id"]  # the device moved with its history
        again = await harness.event(phone, page_url="after")
        assert again["id"] == known["id"]

    assert await harness.db.contacts.count_documents({}) == 1
    survivor = await harness.db.contacts.find_one()
    assert survivor["_id"] == known["id"]
    assert sorted(survivor["tags"]) == ["Customer", "Visitor"]
    assert await harness.db.hits.count_documents({"contact_id": known["id"]}) == 5
    utm_hits = {"contact_id": known["id"], "utm_id": {"$exists": True}}
    assert await harness.db.hits.count_documents(utm_hits) == 1
    assert await harness.db.devices.count_documents({"contact_id": known["id"]}) == 2
    merge = await harness.db.merges.find_one({"_id": anonymous["id"]})
    assert merge["winner_id"] == known["id"]
    audit = await harness.db.audit.find_one({"action": "merge"})
    assert audit["loser_id"] == anonymous["id"] and audit["hits_moved"] == 2
    merged = [e for e in await harness.stream() if e["type"] == "contact_merged"]
    assert merged[0]["contact_id"] == known["id"] and merged[0]["merged_id"] == anonymous["id"]


async def test_mtc_id_of_a_merged_contact_resolves_to_the_survivor(harness):
    await harness.field("email")
    async with harness.browser() as laptop:
        known = await harness.event(laptop, page_url="a", email="ann@example.com")
    async with harness.browser(FIREFOX) as phone:
        anonymous = await harness.event(phone, page_url="b")
        await harness.event(phone, page_url="c", email="ann@example.com")
    async with harness.browser(FIREFOX) as old_cookie_only:
        old_cookie_only.cookies.set("mtc_id", anonymous["id"], domain="track.example.com")
        body = (await old_cookie_only.get("/mtc")).json()
    assert body["id"] == known["id"]
    assert await harness.services.storage.contacts.resolve(anonymous["id"]) is not None


async def test_chained_merges_resolve_to_the_last_survivor(harness):
    contacts = harness.services.storage.contacts
    now = dt.datetime.now(dt.UTC)
    first = await contacts.add(contacts.draft(now, None))
    second = await contacts.add(contacts.draft(now, None))
    third = await contacts.add(contacts.draft(now, None))
    await contacts.record_merge(first["_id"], second["_id"], now)
    await contacts.delete(first["_id"])
    await contacts.record_merge(second["_id"], third["_id"], now)
    await contacts.delete(second["_id"])
    assert (await contacts.resolve(first["_id"]))["_id"] == third["_id"]
    assert await contacts.resolve("0" * 24) is None


async def test_someone_else_on_the_same_browser_switches_without_merging(harness):
    await harness.field("email")
    async with harness.browser() as laptop:
        bob = await harness.event(laptop, page_url="a", email="bob@example.com")
    async with harness.browser(FIREFOX) as shared:
        ann = await harness.event(shared, page_url="a", email="ann@example.com")
        switched = await harness.event(shared, page_url="b", email="bob@example.com")
    assert switched["id"] == bob["id"]
    assert switched["device_id"] != ann["device_id"]
    assert await harness.db.contacts.count_documents({}) == 2
    assert await harness.db.hits.count_documents({"contact_id": ann["id"]}) == 1


async def test_a_second_unknown_email_creates_a_contact_instead_of_overwriting(harness):
    await harness.field("email")
    first = await harness.event(page_url="a", email="ann@example.com")
    second = await harness.event(page_url="b", email="ann.work@example.com")
    assert second["id"] != first["id"]
    original = await harness.db.contacts.find_one({"_id": first["id"]})
    assert original["fields"]["email"] == "ann@example.com"


async def test_email_without_cookies_finds_the_known_contact(harness):
    await harness.field("email")
    known = await harness.event(page_url="a", email="ann@example.com")
    async with harness.browser(FIREFOX) as fresh:
        again = await harness.event(fresh, page_url="b", email="ann@example.com")
    assert again["id"] == known["id"]
    assert await harness.db.contacts.count_documents({}) == 1


async def test_custom_unique_fingerprint_field_identifies(harness):
    await harness.field("fingerprint", unique=True, type="text")
    async with harness.browser() as one:
        first = await harness.event(one, page_url="a", fingerprint="fp-1")
    async with harness.browser() as two:
        second = await harness.event(two, page_url="a", fingerprint="fp-1")
    assert second["id"] == first["id"]


async def test_fingerprints_alone_never_merge(harness):
    async with harness.browser() as one:
        first = await harness.event(one, page_url="a", fingerprint="same")
    async with harness.browser() as two:
        second = await harness.event(two, page_url="a", fingerprint="same")
    assert first["id"] != second["id"]


async def test_tracking_by_ip_is_off_by_default_and_optional(make_harness):
    async with make_harness() as off:
        async with off.browser(ip="198.51.100.1") as one, off.browser(ip="198.51.100.1") as two:
            assert (await off.event(one, page_url="a"))["id"] != (await off.event(two, page_url="a"))["id"]
        # The index IP matching reads is made only when it is on (one index less per new contact).
        assert "last_ip_1" not in await off.db.contacts.index_information()
    async with make_harness(track_by_ip=True) as on:
        async with on.browser(ip="198.51.100.1") as one, on.browser(ip="198.51.100.1") as two:
            assert (await on.event(one, page_url="a"))["id"] == (await on.event(two, page_url="a"))["id"]
        assert "last_ip_1" in await on.db.contacts.index_information()


def test_tracking_by_ip_is_refused_with_anonymisation():
    with pytest.raises(SettingsError, match="cannot be combined"):
        Settings(track_by_ip=True, anonymize_ip="truncate")


async def test_concurrent_first_visits_with_one_email_make_one_contact(harness):
    import asyncio

    await harness.field("email")
    browsers = [harness.browser(ip=f"198.51.100.{i}") for i in range(6)]
    try:
        bodies = await asyncio.gather(
            *(harness.event(b, page_url="p", email="race@example.com") for b in browsers)
        )
    finally:
        for b in browsers:
            await b.aclose()
    assert len({body["id"] for body in bodies}) == 1
    assert await harness.db.contacts.count_documents({}) == 1  # no orphan left by a lost race
    assert await harness.db.hits.count_documents({"contact_id": bodies[0]["id"]}) == 6


async def test_an_ip_guess_never_causes_a_merge(make_harness):
    async with make_harness(track_by_ip=True) as h:
        await h.field("email")
        async with h.browser(ip="198.51.100.9") as office_pc:
            someone = await h.event(office_pc, page_url="a")
        async with h.browser(ip="192.0.2.50") as home:
            ann = await h.event(home, page_url="b", email="ann@example.com")
        async with h.browser(ip="198.51.100.9") as ann_at_the_office:  # same IP as someone, no cookies
            again = await h.event(ann_at_the_office, page_url="c", email="ann@example.com")
        assert again["id"] == ann["id"]
        assert await h.db.contacts.count_documents({"_id": someone["id"]}) == 1  # not merged into Ann
        assert await h.db.merges.count_documents({}) == 0


async def test_a_refused_new_contact_leaves_no_device_behind(harness):
    """A new contact refused by the database (here by a collection validator): no device, no hit
    naming it is written (the device is made after the contact, the hit after both)."""
    await harness.db.command("collMod", "contacts", validator={"refused": {"$exists": True}})
    try:
        response = await harness.client.post("/mtc/event", data={"page_url": "https://s.test/x"})
        assert response.status_code == 503
    finally:
        await harness.db.command("collMod", "contacts", validator={})
    assert await harness.db.devices.count_documents({}) == 0
    assert await harness.db.hits.count_documents({}) == 0
    body = await harness.event(page_url="https://s.test/y")  # and the next visit is whole
    assert await harness.db.devices.count_documents({"contact_id": body["id"]}) == 1


async def test_a_new_visitors_contact_device_and_hit_are_written_in_one_round(harness):
    """One group commit round for the whole visit (not one for the contact, then one for the
    device, then one for the hit): the merge sweep after it sees all three. A known visitor's
    hit goes to the lane of lone hits, which does not wait behind new contacts and devices."""
    storage = harness.services.storage
    rounds: dict[str, list[set[str]]] = {"writes": [], "hit_writes": []}
    sweep = storage.writes.after_write

    def watching(lane: str):
        async def after_write(documents):
            rounds[lane].append({str(document["_id"]) for document in documents})
            await sweep(documents)

        return after_write

    storage.writes.after_write = watching("writes")
    storage.hit_writes.after_write = watching("hit_writes")
    try:
        body = await harness.event(page_url="https://s.test/first")
        again = await harness.event(page_url="https://s.test/second")
    finally:
        storage.writes.after_write = storage.hit_writes.after_write = sweep
    first, second = [
        hit async for hit in harness.db.hits.find({"contact_id": body["id"]}).sort("occurred_at")
    ]
    assert again["id"] == body["id"]
    assert rounds == {
        "writes": [{body["id"], body["device_id"], str(first["_id"])}],
        "hit_writes": [{str(second["_id"])}],
    }
