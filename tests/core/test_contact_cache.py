"""The tracking hot path's contact cache (contact_monitor/storage/contacts.py `ContactCache`) and
the invalidation channel that keeps it honest across processes (contact_monitor/core/invalidation.py)."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx

from contact_monitor.storage.contacts import ANY_CONTACT, ContactCache
from tests.conftest import BASE_URL, CHROME


def contact(contact_id: str) -> dict[str, object]:
    return {"_id": contact_id, "fields": {}}


def test_the_cache_keeps_nothing_while_off():
    cache = ContactCache(10)
    cache.put(contact("a"), cache.generation)
    assert cache.get("a") is None
    cache.enable()
    cache.put(contact("a"), cache.generation)
    assert cache.get("a") == contact("a")
    cache.disable()
    assert len(cache) == 0 and not cache.enabled


def test_a_read_in_flight_while_something_was_dropped_is_not_kept():
    cache = ContactCache(10)
    cache.enable()
    started = cache.generation
    cache.drop(["b"])  # another contact: the read of "a" may still predate a change, keep nothing
    cache.put(contact("a"), started)
    assert cache.get("a") is None
    cache.put(contact("a"), cache.generation)
    assert cache.get("a") is not None


def test_the_cache_is_bounded_and_forgets_the_least_recently_used():
    cache = ContactCache(2)
    cache.enable()
    for name in "abc":
        cache.put(contact(name), cache.generation)
        if name == "b":
            cache.get("a")  # a is used again: b is now the oldest
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    cache.drop([ANY_CONTACT])
    assert len(cache) == 0


def test_a_cache_of_size_zero_stays_off():
    cache = ContactCache(0)
    cache.enable()
    assert not cache.enabled


async def test_a_returning_visitor_is_served_from_the_cache(harness):
    cache = harness.services.storage.contacts.cache
    await asyncio.wait_for(cache.on.wait(), 10)
    await harness.pixel(page_url="https://shop.example.com/1")
    hits, misses = cache.hits, cache.misses
    for page in range(3):
        await harness.pixel(page_url=f"https://shop.example.com/{page + 2}")
    assert (cache.hits - hits, cache.misses - misses) == (3, 0)
    assert await harness.db.hits.count_documents({}) == 4
    key = await harness.services.storage.api_keys.create("metrics", "read")
    metrics = (await harness.client.get("/metrics", headers={"Authorization": f"Bearer {key}"})).text
    assert "cm_contact_cache_enabled 1.0" in metrics and f"cm_contact_cache_hits {cache.hits}.0" in metrics


async def test_a_change_made_by_another_process_is_not_overwritten_by_a_stale_copy(make_harness):
    """Two server processes on one database and Redis. Process b caches the contact with
    firstname Ann; process a changes it to Bob. When the visitor sends Ann again through b, b must
    write it: with a stale copy it would see nothing new, skip the write and leave Bob."""
    async with make_harness() as a, make_harness() as b:
        await a.field("firstname")
        cache_a, cache_b = a.services.storage.contacts.cache, b.services.storage.contacts.cache
        await asyncio.wait_for(asyncio.gather(cache_a.on.wait(), cache_b.on.wait()), 10)
        transport_b = httpx.ASGITransport(app=b.app, client=("203.0.113.10", 50000))
        async with httpx.AsyncClient(
            transport=transport_b, base_url=BASE_URL, headers={"User-Agent": CHROME}
        ) as browser:
            body = await b.event(browser, page_url="https://shop.example.com/1", firstname="Ann")
            contact_id = body["id"]
            assert cache_b.get(contact_id) is not None

            cache_b.dropped.clear()
            device = browser.cookies["mautic_device_id"]
            await a.event(page_url="https://shop.example.com/2", firstname="Bob", mautic_device_id=device)
            stored = await a.db.contacts.find_one({"_id": contact_id})
            assert stored["fields"]["firstname"] == "Bob"
            await asyncio.wait_for(cache_b.dropped.wait(), 10)  # a's announcement reached b
            assert cache_b.get(contact_id) is None

            await b.event(browser, page_url="https://shop.example.com/3", firstname="Ann")
            stored = await b.db.contacts.find_one({"_id": contact_id})
            assert stored["fields"]["firstname"] == "Ann"


async def test_a_process_skips_its_own_announcements_and_hears_everyone_elses(make_harness):
    """a writes a contact: a drops it at once and b when a's message arrives. What a caches
    again afterwards stays: its own message, heard later, is not a change it missed. A message
    without a sender (an operator's script) applies to every process."""
    async with make_harness() as a, make_harness() as b:
        cache_a, cache_b = a.services.storage.contacts.cache, b.services.storage.contacts.cache
        await asyncio.wait_for(asyncio.gather(cache_a.on.wait(), cache_b.on.wait()), 10)
        for cache in (cache_a, cache_b):
            cache.put(contact("x"), cache.generation)
        cache_b.dropped.clear()
        await a.services.storage.contacts.changed("x")
        assert cache_a.get("x") is None
        cache_a.put(contact("x"), cache_a.generation)  # read again after the write
        await asyncio.wait_for(cache_b.dropped.wait(), 10)
        assert cache_b.get("x") is None

        # Messages of one channel arrive in order: once a has heard this one, it has heard its own.
        cache_a.put(contact("y"), cache_a.generation)
        cache_a.dropped.clear()
        await a.redis.publish(a.services.invalidations.channel, "contacts y")
        await asyncio.wait_for(cache_a.dropped.wait(), 10)
        assert cache_a.get("y") is None
        assert cache_a.get("x") == contact("x")


async def test_a_rule_transaction_replaces_only_the_copy_it_held(harness):
    """`committed`: a contact whose cached object is still the one held before the transaction
    takes the written state; one replaced meanwhile (a hit wrote it and read it again) is
    dropped, never overwritten with the transaction's older view; an uncached one is not added."""
    contacts = harness.services.storage.contacts
    cache = contacts.cache
    await asyncio.wait_for(cache.on.wait(), 10)
    cache.put({"_id": "a", "fields": {}, "points": 0}, cache.generation)
    cache.put({"_id": "b", "fields": {}, "points": 0}, cache.generation)
    held = contacts.cached_now(["a", "b", "c"])
    assert set(held) == {"a", "b"}
    cache.drop(["b"])  # a hit of b's visitor wrote b, and read it again
    cache.put({"_id": "b", "fields": {"firstname": "Ann"}, "points": 0}, cache.generation)
    written = [{"_id": name, "fields": {}, "points": 10} for name in "abc"]
    await contacts.committed(written, held)
    assert cache.get("a") == written[0]
    assert cache.get("b") is None and cache.get("c") is None


async def test_a_merged_contact_leaves_the_cache_at_once(harness):
    """The loser of a merge is deleted: a hit naming it must find the survivor, not a cached copy."""
    await harness.field("email", unique=True)
    cache = harness.services.storage.contacts.cache
    await asyncio.wait_for(cache.on.wait(), 10)
    known = await harness.event(page_url="https://shop.example.com/a", email="ann@example.com")
    async with harness.browser() as other:
        anonymous = await harness.event(other, page_url="https://shop.example.com/b")
        await harness.pixel(other, page_url="https://shop.example.com/c")  # cached now
        assert cache.get(anonymous["id"]) is not None
        merged = await harness.event(other, page_url="https://shop.example.com/d", email="ann@example.com")
        assert merged["id"] == known["id"]
        assert cache.get(anonymous["id"]) is None
        await harness.pixel(other, page_url="https://shop.example.com/e")
    assert await harness.db.hits.count_documents({"contact_id": anonymous["id"]}) == 0
    assert await harness.db.hits.count_documents({"contact_id": known["id"]}) == 5


async def test_the_cache_is_off_while_redis_is_gone_or_silent(make_harness, tmp_path):
    """A Redis of the test's own: stopped, the cache turns off at once and tracking reads
    MongoDB; paused (no answer to PING), it turns off within a few seconds; back, it turns on."""
    from contact_monitor.embedded import start_redis

    server = start_redis(tmp_path / "redis", persistent=False)
    try:
        async with make_harness(redis_url=server.uri) as h:
            cache = h.services.storage.contacts.cache
            await asyncio.wait_for(cache.on.wait(), 10)
            await h.pixel(page_url="https://shop.example.com/1")
            await h.pixel(page_url="https://shop.example.com/2")
            assert len(cache) == 1

            server.stop()
            await asyncio.wait_for(cache.off.wait(), 10)
            assert len(cache) == 0
            misses = cache.misses
            await h.pixel(page_url="https://shop.example.com/3")  # stored, read from MongoDB
            assert cache.misses == misses and len(cache) == 0

            server = start_redis(tmp_path / "redis", persistent=False, port=server.port)
            await asyncio.wait_for(cache.on.wait(), 30)
            await h.pixel(page_url="https://shop.example.com/4")
            assert len(cache) == 1

            assert server.process is not None
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                await asyncio.wait_for(cache.off.wait(), 15)
                assert len(cache) == 0
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            await asyncio.wait_for(cache.on.wait(), 15)
            assert await h.db.hits.count_documents({}) == 4
    finally:
        server.stop()
