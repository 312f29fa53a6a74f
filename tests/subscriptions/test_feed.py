"""Subscriptions through `schema.subscribe` against the app's own stream reader and real Redis."""

import asyncio
import datetime as dt
from typing import Any

from api.context import Context
from api.schema import schema
from contact_monitor.core.activity import Activity
from subscriptions.hub import Lagged
from tests.conftest import FIREFOX

EVENT = """{ cursor type occurredAt contact { id email isAnonymous } hit { url title utm { source } }
            data skipped oldestCursor }"""
ACTIVITY = f"subscription($filter: ActivityFilter, $after: String) {{ activity(filter: $filter, after: $after) {EVENT} }}"
VISITS = f"subscription($filter: ActivityFilter, $after: String) {{ liveVisits(filter: $filter, after: $after) {EVENT} }}"
TIMEOUT = 10


class Feed:
    """An open subscription; `next()` awaits the next event (never a sleep)."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    async def next(self) -> dict[str, Any]:
        result = await asyncio.wait_for(self.generator.__anext__(), TIMEOUT)
        assert result.errors is None, result.errors
        return next(iter(result.data.values()))

    async def error(self) -> Any:
        result = await asyncio.wait_for(self.generator.__anext__(), TIMEOUT)
        assert result.errors, result
        return result.errors[0]

    async def close(self) -> None:
        await self.generator.aclose()


async def subscribe(harness, query=ACTIVITY, role="read", **variables) -> Feed:
    context = Context(services=harness.services, hub=harness.hub, role=role, key_name="test")
    generator = await schema.subscribe(query, variable_values=variables, context_value=context)
    feed = Feed(generator)
    return feed


async def started(harness, query=ACTIVITY, **variables) -> Feed:
    """A live subscription from this moment: the hub has delivered everything already in the
    stream, and the subscription's queue is open (generators start on the first __anext__)."""
    hub = harness.hub
    await hub.caught_up()
    before = len(hub.subscribers)
    feed = await subscribe(harness, query, **variables)
    feed.pending = asyncio.ensure_future(feed.next())  # type: ignore[attr-defined]
    await hub.wait_for(lambda h: len(h.subscribers) > before)
    return feed


async def take(feed: Feed) -> dict[str, Any]:
    pending = getattr(feed, "pending", None)
    if pending is not None:
        feed.pending = None  # type: ignore[attr-defined]
        return await asyncio.wait_for(pending, TIMEOUT)
    return await feed.next()


async def test_a_hit_reaches_the_subscriber(harness):
    feed = await started(harness)
    body = await harness.event(page_url="https://s.test/live", page_title="Live")
    created = await take(feed)
    hit = await take(feed)
    assert created["type"] == "CONTACT_CREATED" and created["contact"]["id"] == body["id"]
    assert hit["type"] == "PAGE_HIT" and hit["hit"] == {
        "url": "https://s.test/live",
        "title": "Live",
        "utm": None,
    }
    assert hit["contact"] == {"id": body["id"], "email": None, "isAnonymous": True}
    assert hit["cursor"].count("-") == 1 and hit["skipped"] is None
    await feed.close()
    assert not harness.hub.subscribers  # unsubscribing cleans up


async def test_filters_include_and_exclude(harness):
    await harness.field("email")
    cases = [
        ({"types": ["TAGS_CHANGED"]}, {"page_url": "a"}, {"page_url": "b", "tags": "x"}),
        (
            {"urlContains": "PRICING"},
            {"page_url": "https://s.test/blog"},
            {"page_url": "https://s.test/pricing"},
        ),
        (
            {"identifiedOnly": True, "types": ["PAGE_HIT"]},
            {"page_url": "a"},
            {"page_url": "b", "email": "i@x.test"},
        ),
        ({"tag": "vip", "types": ["PAGE_HIT"]}, {"page_url": "a"}, {"page_url": "b", "tags": "VIP"}),
        ({"utmSource": "news"}, {"page_url": "a?utm_source=ads"}, {"page_url": "b?utm_source=news"}),
        (
            {"utmCampaign": "Spring"},
            {"page_url": "a?utm_campaign=Fall"},
            {"page_url": "b?utm_campaign=Spring"},
        ),
    ]
    for event_filter, excluded, included in cases:
        async with harness.browser() as browser:
            feed = await started(harness, filter=event_filter)
            await harness.event(browser, **excluded)
            await harness.event(browser, **included)
            got = await take(feed)
            if event_filter.get("types") == ["TAGS_CHANGED"]:
                assert got["type"] == "TAGS_CHANGED" and got["data"]["added"] == ["x"], got
            else:
                assert got["type"] == "PAGE_HIT" and got["hit"]["url"] == included["page_url"], (
                    event_filter,
                    got,
                )
            await feed.close()


async def test_contact_filter_and_live_visits(harness):
    async with harness.browser() as one, harness.browser(FIREFOX) as two:
        first = await harness.event(one, page_url="mine")
        feed = await started(harness, VISITS, filter={"contactId": first["id"]})
        await harness.event(two, page_url="someone else")
        await harness.event(one, tags="t", page_url="mine again")
        got = await take(feed)
    assert got["type"] == "PAGE_HIT" and got["hit"]["url"] == "mine again"
    await feed.close()


async def test_resume_after_a_cursor_gets_exactly_the_missed_events_then_live(harness):
    feed = await started(harness, VISITS)
    await harness.event(page_url="seen")
    cursor = (await take(feed))["cursor"]
    await feed.close()  # the dashboard disconnects
    for i in range(5):
        await harness.event(page_url=f"missed {i}")
    resumed = await subscribe(harness, VISITS, after=cursor)
    replay = [await resumed.next() for _ in range(5)]
    assert [e["hit"]["url"] for e in replay] == [f"missed {i}" for i in range(5)]
    await harness.event(page_url="live after resume")
    assert (await resumed.next())["hit"]["url"] == "live after resume"  # no duplicate, no gap
    await resumed.close()


async def test_a_cursor_older_than_the_retention_gets_a_gap_marker(make_harness):
    async with make_harness(stream_maxlen=10) as h:
        publisher = h.services.publisher
        now = dt.datetime.now(dt.UTC)
        first_ids = await publisher.publish([Activity("custom_activity", "c", now)], None)
        for _ in range(5):
            await publisher.publish([Activity("custom_activity", "c", now)] * 100, None)
        feed = await subscribe(h, after=first_ids[0])
        gap = await feed.next()
        assert gap["type"] == "GAP" and gap["cursor"] == first_ids[0]
        oldest = (await h.redis.xrange(h.settings.stream_key, count=1))[0][0].decode()
        assert gap["oldestCursor"] == oldest
        following = await feed.next()
        assert following["type"] == "CUSTOM_ACTIVITY" and following["cursor"] == oldest
        await feed.close()


async def test_no_gap_when_nothing_was_trimmed(harness):
    feed = await started(harness, VISITS)
    await harness.event(page_url="one")
    cursor = (await take(feed))["cursor"]
    await feed.close()
    await harness.event(page_url="two")
    resumed = await subscribe(harness, VISITS, after=cursor)
    assert (await resumed.next())["hit"]["url"] == "two"
    await resumed.close()


async def test_a_slow_subscriber_gets_lagged_and_memory_stays_bounded(make_harness):
    async with make_harness(subscription_queue=5) as h:
        feed = await started(h, VISITS)
        await h.event(page_url="first")  # contact_created + page_hit
        for i in range(20):
            await h.event(page_url=f"burst {i}")
        [subscriber] = h.hub.subscribers
        await h.hub.caught_up()  # every event was offered to the subscriber
        assert any(isinstance(item, Lagged) for item in subscriber.queue)
        assert len(subscriber.queue) <= 6  # the limit, plus one marker
        received = [await take(feed)]
        while received[-1]["type"] != "LAGGED":
            received.append(await feed.next())
        lagged = received[-1]
        delivered_hits = [e for e in received if e["type"] == "PAGE_HIT"]
        assert lagged["skipped"] > 0
        # 21 page hits in all: each was either delivered or counted by the marker.
        assert len(delivered_hits) + lagged["skipped"] == 21
        assert lagged["cursor"] == received[-2]["cursor"]  # the last event before the gap
        # Resubscribing from the marker's cursor recovers what was skipped.
        recovered = await subscribe(h, VISITS, after=lagged["cursor"])
        urls = [(await recovered.next())["hit"]["url"] for _ in range(lagged["skipped"])]
        assert urls[-1] == "burst 19"
        await recovered.close()
        await feed.close()


async def test_visitors_online_rises_and_falls(harness):
    online = await subscribe(harness, "subscription { visitorsOnline(window: 3) }")
    assert await online.next() == 0
    async with harness.browser() as one, harness.browser(FIREFOX) as two:
        await harness.event(one, page_url="a")
        assert await online.next() == 1
        await harness.event(two, page_url="a")
        assert await online.next() == 2
    assert await online.next() < 2  # the window passes: they go offline
    await online.close()


async def test_visitors_online_is_counted_once_a_second_for_all_subscribers(harness):
    """Twenty dashboards of the same window share one count a second (one ZCOUNT), and each
    gets every change; when the last leaves, the polling stops."""

    async def zcounts() -> int:
        stats = await harness.redis.info("commandstats")
        return int(stats.get("cmdstat_zcount", {}).get("calls", 0))

    feeds = [await subscribe(harness, "subscription { visitorsOnline(window: 60) }") for _ in range(20)]
    assert [await feed.next() for feed in feeds] == [0] * 20
    before = await zcounts()
    await harness.event(page_url="a")
    assert [await feed.next() for feed in feeds] == [1] * 20
    assert await zcounts() - before <= 3  # a second or two of polling, not one per subscriber
    for feed in feeds:
        await feed.close()
    assert harness.hub.online is not None and harness.hub.online.pollers == {}


async def test_errors(harness):
    forbidden = await subscribe(harness, role="none")
    assert (await forbidden.error()).extensions == {"code": "FORBIDDEN"}
    bad_cursor = await subscribe(harness, after="not-a-cursor")
    error = await bad_cursor.error()
    assert "invalid cursor" in error.message and error.extensions == {"code": "BAD_USER_INPUT"}
    bad_window = await subscribe(harness, "subscription { visitorsOnline(window: 0) }")
    assert "between 1 and 3600" in (await bad_window.error()).message


async def test_the_reader_survives_a_redis_outage(harness):
    """XREAD failures are logged and retried; subscribers get the events once Redis is back."""
    import logging

    from redis.asyncio import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    hub = harness.hub
    feed = await started(harness, VISITS)
    failed = asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            failed.set()

    handler = Seen(level=logging.WARNING)
    logging.getLogger("subscriptions.hub").addHandler(handler)
    working = hub.redis
    broken = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        hub.redis = broken
        await asyncio.wait_for(failed.wait(), TIMEOUT)
        hub.redis = working
        await harness.event(page_url="after the outage")
        assert (await take(feed))["hit"]["url"] == "after the outage"
    finally:
        hub.redis = working
        logging.getLogger("subscriptions.hub").removeHandler(handler)
        await broken.aclose()
        await feed.close()


async def test_a_poisoned_stream_entry_restarts_the_reader_and_the_feed_goes_on(harness):
    """Another service appends an entry that breaks the JSON parser (RecursionError, not a Redis
    error): the supervised reader restarts after it, /health says so, and later events arrive."""
    async with harness.hub.subscribe() as subscriber:
        await harness.redis.xadd(harness.settings.stream_key, {"event": "[" * 100_000 + "]" * 100_000})
        body = await harness.event(page_url="after-the-poison")
        seen = []
        while not any(e.get("type") == "page_hit" for e in seen):
            item = await subscriber.get()
            if not isinstance(item, Lagged):
                seen.append(item[1])
        hit = next(e for e in seen if e["type"] == "page_hit")
        assert hit["contact_id"] == body["id"] and hit["hit"]["url"] == "after-the-poison"
    assert harness.hub.restarts == 1
    health = (await harness.client.get("/health")).json()
    assert health["status"] == "ok" and "restarted 1 times" in health["stream_reader"]
    assert "RecursionError" in health["stream_reader"]


async def test_events_a_filter_does_not_want_take_no_place_in_the_queue(make_harness):
    """A subscription to custom activity during a flood of page hits: its small queue never
    fills and it gets no LAGGED marker, only what it asked for."""
    async with make_harness(subscription_queue=2) as h:
        query = "subscription { activity(filter: {types: [CUSTOM_ACTIVITY]}) { type data } }"
        feed = await started(h, query)
        for i in range(10):
            await h.event(page_url=f"flood {i}")
        await h.hub.caught_up()
        [subscriber] = h.hub.subscribers
        assert not subscriber.queue  # nothing offered was wanted
        api_key = await h.services.storage.api_keys.create("w", "write")
        mutation = 'mutation { recordActivity(contact: {email: "a@b.test"}, type: "forum_post") { id } }'
        response = await h.client.post(
            "/graphql", json={"query": mutation}, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert not response.json().get("errors")
        event = await take(feed)
        assert event["type"] == "CUSTOM_ACTIVITY" and event["data"]["activity_type"] == "forum_post"
        await feed.close()


async def test_without_subscribers_the_reader_rests_and_a_newcomer_gets_what_follows(harness):
    """Nobody subscribed: the reader fetches nothing (entries pass it by). The first subscriber
    starts from the stream's end as it joins: not the entries that went by unread, and not one
    appended after it joined is missed."""
    hub = harness.hub
    await hub.wait_for(lambda h: h.idle)
    resting_at = hub.last_id

    async def reads() -> int:
        return int((await harness.redis.info("commandstats")).get("cmdstat_xread", {}).get("calls", 0))

    before = await reads()
    await harness.event(page_url="https://s.test/unwatched")
    await harness.event(page_url="https://s.test/unwatched-too")
    assert await reads() == before  # two whole requests went by: a reading hub would have read
    assert hub.idle and hub.last_id == resting_at
    async with hub.subscribe() as subscriber:
        assert not hub.idle and hub.last_id != resting_at
        body = await harness.event(page_url="https://s.test/watched")
        seen: list[dict[str, Any]] = []
        while not any(e.get("type") == "page_hit" for e in seen):
            item = await asyncio.wait_for(subscriber.get(), TIMEOUT)
            assert not isinstance(item, Lagged)
            seen.append(item[1])
    assert [e["type"] for e in seen] == ["page_hit"]  # the same visitor: no contact_created
    assert seen[0]["contact_id"] == body["id"] and seen[0]["hit"]["url"] == "https://s.test/watched"
    await hub.wait_for(lambda h: h.idle)  # the last one left: resting again


async def test_a_newcomer_while_redis_does_not_answer_gets_what_follows_once_it_does(harness):
    """The first subscriber joins a resting reader while Redis is unreachable: the join does not
    fail, and once Redis answers the reader starts from the stream's end (not from where it
    rested, and not from whatever `$` means at each blocking read)."""
    from redis.asyncio import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    hub = harness.hub
    await hub.wait_for(lambda h: h.idle)
    await harness.event(page_url="https://s.test/unwatched")
    working = hub.redis
    broken = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        hub.redis = broken
        async with hub.subscribe() as subscriber:
            hub.redis = working
            body = await harness.event(page_url="https://s.test/watched")
            item = await asyncio.wait_for(subscriber.get(), TIMEOUT)
            assert not isinstance(item, Lagged)
            assert item[1]["contact_id"] == body["id"] and item[1]["hit"]["url"] == "https://s.test/watched"
    finally:
        hub.redis = working
        await broken.aclose()
