"""/mtracking.gif: the 43-byte GIF, Mautic's headers, and what a hit stores."""

import asyncio
import base64
import datetime as dt

from bson import ObjectId
from pymongo import monitoring

from tests.conftest import IPHONE

GIF = base64.b64decode("R0lGODlhAQABAJAAAP8AAAAAACH5BAUQAAAALAAAAAABAAEAAAICBAEAOw==")


async def test_answers_the_gif_with_no_cache_headers_and_cookies(harness):
    response = await harness.pixel(page_url="https://shop.test/p", page_title="P")
    assert response.content == GIF and len(GIF) == 43
    headers = response.headers
    assert headers["content-type"] == "image/gif"
    assert headers["content-length"] == "43"
    assert headers["cache-control"] == "private, no-cache, no-cache=Set-Cookie, proxy-revalidate"
    assert headers["expires"] == "Wed, 11 Jan 2000 12:59:00 GMT"
    assert headers["pragma"] == "no-cache"
    cookies = {c.split("=", 1)[0]: c for c in headers.get_list("set-cookie")}
    assert set(cookies) == {"mtc_id", "mautic_device_id", "mautic_referer_id"}
    for cookie in cookies.values():
        assert "SameSite=none" in cookie and "Secure" in cookie and "Path=/" in cookie
    assert "Max-Age=31536000" in cookies["mautic_device_id"]
    assert "Max-Age=1800" in cookies["mautic_referer_id"]
    assert "Max-Age" not in cookies["mtc_id"]  # a session cookie


async def test_a_hit_stores_the_data_contract(harness):
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)  # stored at millisecond precision
    await harness.client.get(
        "/mtracking.gif",
        params={
            "page_url": "https://shop.test/p?x=1",
            "page_title": "Product",
            "page_referrer": "https://google.test/",
            "page_language": "de-DE",
            "counter": "0",
            "timezone_offset": "-120",
            "resolution": "1920x1080",
            "platform": "Windows",
            "fingerprint": "abc123",
            "adblock": "false",
            "do_not_track": "true",
            "custom": "kept",
        },
        headers={"Accept-Language": "de-DE,de;q=0.9, en;q=0.8"},
    )
    hit = await harness.db.hits.find_one()
    contact = await harness.db.contacts.find_one()
    device = await harness.db.devices.find_one()
    assert hit["contact_id"] == contact["_id"] and hit["device_id"] == device["_id"]
    assert before <= hit["occurred_at"] <= dt.datetime.now(dt.UTC)
    assert (hit["url"], hit["title"], hit["referrer"], hit["language"]) == (
        "https://shop.test/p?x=1",
        "Product",
        "https://google.test/",
        "de-DE",
    )
    assert hit["browser_languages"] == ["de-DE", "de", "en"]
    assert hit["user_agent"]["browser"] == "Chrome" and hit["user_agent"]["device_type"] == "desktop"
    assert hit["ip"] == "203.0.113.10"
    assert hit["fingerprint"] == {
        "hash": "abc123",
        "resolution": "1920x1080",
        "timezone_offset": -120,
        "platform": "Windows",
        "adblock": False,
        "do_not_track": True,
    }
    assert device["fingerprint"]["hash"] == "abc123"
    assert hit["query"]["custom"] == "kept" and hit["query"]["x"] == "1"
    assert hit["counter"] == 0 and hit["utm"] is None
    assert "date_left" not in hit and "time_on_page" not in hit  # written once, derived when read
    assert contact["fields"]["timezone"] == "Etc/GMT-2"  # as Mautic: from the offset when unset


async def test_any_method_records_head_does_not(harness):
    response = await harness.client.post("/mtracking.gif", data={"page_url": "posted"})
    assert response.status_code == 200 and response.content == GIF
    head = await harness.client.head("/mtracking.gif", params={"page_url": "head"})
    assert head.status_code == 200 and head.headers["content-type"] == "image/gif"
    assert [h["url"] async for h in harness.db.hits.find()] == ["posted"]


async def test_mobile_screen_views_with_a_reused_cookie_jar_are_one_contact(harness):
    async with harness.browser(user_agent=IPHONE) as app:
        await harness.pixel(app, page_url="main_screen")
        await harness.pixel(app, page_url="cart_screen")
    hits = [h async for h in harness.db.hits.find().sort("occurred_at", 1)]
    assert [h["url"] for h in hits] == ["main_screen", "cart_screen"]
    assert hits[0]["contact_id"] == hits[1]["contact_id"]
    assert await harness.db.contacts.count_documents({}) == 1
    assert hits[0]["user_agent"]["device_type"] == "smartphone"


async def test_time_on_page_is_the_next_hit_of_the_device(harness):
    await harness.pixel(page_url="first")
    await harness.pixel(page_url="second")
    first = await harness.db.hits.find_one({"url": "first"})
    second = await harness.db.hits.find_one({"url": "second"})
    left = await harness.services.storage.hits.next_times([first, second])
    assert left == {first["_id"]: second["occurred_at"]}  # the second has no next hit yet


class Writes(monitoring.CommandListener):
    """Write commands seen while `active` (pymongo listeners cannot be unregistered)."""

    def __init__(self) -> None:
        self.active = True
        self.names: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active and event.command_name in ("insert", "update", "findAndModify", "delete"):
            self.names.append((event.command_name, event.command.get(event.command_name)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_hits_are_written_once(make_harness):
    """A returning visitor viewing pages within a minute: one insert per hit, no update of a hit,
    a device or a contact (the server's MongoDB client is watched)."""
    writes = Writes()
    monitoring.register(writes)  # applies to the clients created from now on: the app's
    try:
        async with make_harness() as h:
            await h.pixel(page_url="first")
            writes.names.clear()
            for i in range(3):
                await h.pixel(page_url=f"next-{i}")
            assert writes.names == [("insert", "hits")] * 3
    finally:
        writes.active = False


async def test_time_on_page_without_the_referer_cookie(harness):
    """Third-party cookies blocked: the device id travels as a parameter (mtc.js localStorage)."""
    body = await harness.event(page_url="first")
    async with harness.browser() as cookieless:
        await harness.event(cookieless, page_url="second", mautic_device_id=body["device_id"])
    first = await harness.db.hits.find_one({"url": "first"})
    assert first["_id"] in await harness.services.storage.hits.next_times([first])


async def test_time_on_page_window_is_30_minutes(harness):
    hits = harness.services.storage.hits
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    docs = [
        {"device_id": "d", "occurred_at": now - dt.timedelta(minutes=31)},  # 30:00 before the next
        {"device_id": "d", "occurred_at": now - dt.timedelta(minutes=1)},  # 1:00 before the next
        {"device_id": "d", "occurred_at": now},
        {"device_id": "d", "occurred_at": now},  # the same millisecond: still the next one
        {"device_id": "other", "occurred_at": now - dt.timedelta(minutes=59)},
    ]
    for doc in docs:
        doc["_id"] = ObjectId()
        await harness.services.storage.store_visit(hit=doc)
    left = await hits.next_times(docs)
    assert left == {
        docs[0]["_id"]: docs[1]["occurred_at"],
        docs[1]["_id"]: now,
        docs[2]["_id"]: now,
    }
    late = {"_id": "x", "device_id": "other", "occurred_at": now - dt.timedelta(minutes=90)}
    assert await hits.next_times([late]) == {}  # 31 minutes before the other device's hit


async def test_referer_header_is_the_page_url_when_none_is_sent(harness):
    await harness.client.get("/mtracking.gif", headers={"Referer": "https://blog.test/post"})
    assert (await harness.db.hits.find_one())["url"] == "https://blog.test/post"


async def test_a_repeated_header_counts_with_its_first_value(harness):
    # As Starlette's `request.headers.get` answers (ingest/routes.py `first_values`).
    headers = (
        (b"referer", b"https://first.test/a"),
        (b"referer", b"https://second.test/b"),
        (b"dnt", b"1"),
        (b"dnt", b"0"),
        (b"accept-language", b"de-DE,de;q=0.9"),
        (b"accept-language", b"fr"),
    )
    status, _, _ = await harness.raw("GET", "/mtracking.gif", headers=headers)
    assert status == 200
    hit = await harness.db.hits.find_one()
    assert hit["url"] == "https://first.test/a"
    assert hit["privacy"] == {"dnt": True, "gpc": False}
    assert hit["browser_languages"] == ["de-DE", "de"]


async def test_deprecated_url_and_title_aliases(harness):
    await harness.pixel(url="https://old.test/", title="Old", referrer="https://r.test/", language="fr")
    hit = await harness.db.hits.find_one()
    assert (hit["url"], hit["title"], hit["referrer"], hit["language"]) == (
        "https://old.test/",
        "Old",
        "https://r.test/",
        "fr",
    )


async def test_title_is_a_field_not_an_alias_when_publicly_updatable(harness):
    await harness.field("title")
    await harness.pixel(page_url="p", title="Dr")
    hit = await harness.db.hits.find_one()
    contact = await harness.db.contacts.find_one()
    assert hit["title"] == "" and contact["fields"]["title"] == "Dr"


async def test_utm_codes_from_the_page_url_create_a_utm_record(harness):
    await harness.pixel(page_url="https://s.test/?utm_source=news&utm_medium=email&utm_campaign=Spring")
    await harness.pixel(page_url="https://s.test/?utm_source=&utm_campaign=")
    hits = [h async for h in harness.db.hits.find().sort("occurred_at", 1)]
    assert hits[0]["utm"] == {"utm_source": "news", "utm_medium": "email", "utm_campaign": "Spring"}
    assert hits[1]["utm"] is None
    assert "utm_id" in hits[0] and "utm_id" not in hits[1]  # the hit is its UTM record
    assert await harness.db.utm_records.count_documents({}) == 0  # nothing else is written
    pages = await harness.services.storage.hits.pages_for_contacts(
        [hits[0]["contact_id"]], before=None, limit=10, utm=True
    )
    [record] = pages[hits[0]["contact_id"]]
    assert record["utm_campaign"] == "Spring" and record["hit_id"] == hits[0]["_id"]
    assert record["_id"] == hits[0]["utm_id"]


async def test_clickthrough_attribution_is_stored(harness):
    from tests.php import serialize

    ct = base64.b64encode(serialize({"channel": {"email": 4}, "email": 4, "stat": "abc"})).decode()
    await harness.pixel(page_url="p", ct=ct)
    hit = await harness.db.hits.find_one()
    assert hit["clickthrough"] == {"source": "email", "source_id": "4", "email": "4", "stat": "abc"}


async def test_last_active_follows_the_visits(harness):
    contacts = harness.services.storage.contacts
    await harness.pixel(page_url="first")
    contact = await harness.db.contacts.find_one()
    stale = contact["last_active"] - dt.timedelta(minutes=5)
    await harness.db.contacts.update_one({"_id": contact["_id"]}, {"$set": {"last_active": stale}})
    # Written behind the service's back: announced as docs/caches.md tells operators to.
    await announce_outside_write(harness, contact["_id"])
    await harness.pixel(page_url="second")
    second = await harness.db.hits.find_one({"url": "second"})
    assert (await contacts.get(contact["_id"]))["last_active"] == second["occurred_at"]
    # Within a minute, a hit that changes nothing else does not rewrite the contact.
    await harness.pixel(page_url="third")
    assert (await contacts.get(contact["_id"]))["last_active"] == second["occurred_at"]


async def announce_outside_write(harness, contact_id: str) -> None:
    """PUBLISH <prefix>invalidate "contacts <id>", then wait until the server heard it."""
    cache = harness.services.storage.contacts.cache
    cache.dropped.clear()
    channel = f"{harness.settings.redis_prefix}invalidate"
    await harness.redis.publish(channel, f"contacts {contact_id}")
    await asyncio.wait_for(cache.dropped.wait(), 10)
