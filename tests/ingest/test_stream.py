"""The activity stream: what each stored activity appends to <prefix>activity."""

import datetime as dt
import json

from contact_monitor.core.activity import Activity, ActivityPublisher
from tests.servers import redis_prefix


async def test_first_visit_publishes_created_then_page_hit(harness):
    body = await harness.event(page_url="https://s.test/?utm_campaign=Spring&utm_source=x", page_title="Home")
    events = await harness.stream()
    assert [e["type"] for e in events] == ["contact_created", "page_hit"]
    hit = events[-1]
    assert hit["contact_id"] == body["id"] and hit["device_id"] == body["device_id"]
    assert hit["contact"] == {"id": body["id"], "email": None, "anonymous": True, "tags": []}
    assert hit["hit"]["url"] == "https://s.test/?utm_campaign=Spring&utm_source=x"
    assert hit["hit"]["title"] == "Home"
    assert hit["hit"]["utm"] == {"utm_campaign": "Spring", "utm_source": "x"}
    assert hit["occurred_at"].endswith("Z")
    stored = await harness.db.hits.find_one()
    assert hit["hit_id"] == hit["hit"]["id"] == str(stored["_id"])
    assert "query" not in hit["hit"]


async def test_tags_fields_and_identification_events(harness):
    await harness.field("email")
    await harness.field("firstname")
    await harness.event(page_url="a")
    await harness.event(page_url="b", email="ann@example.com", firstname="Ann", tags="VIP,-Nope")
    await harness.event(page_url="c", tags="-vip")
    events = await harness.stream()
    by_type = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    assert by_type["contact_identified"][0]["fields"]["email"] == "ann@example.com"
    assert by_type["fields_updated"][-1]["fields"] == {"email": "ann@example.com", "firstname": "Ann"}
    assert [(e["added"], e["removed"]) for e in by_type["tags_changed"]] == [(["VIP"], []), ([], ["VIP"])]
    assert by_type["page_hit"][-1]["contact"]["email"] == "ann@example.com"
    assert by_type["page_hit"][-1]["contact"]["anonymous"] is False


async def test_unchanged_tags_and_fields_publish_nothing_extra(harness):
    await harness.field("firstname")
    await harness.event(page_url="a", firstname="Ann", tags="x")
    before = len(await harness.stream())
    await harness.event(page_url="b", firstname="Ann", tags="X")
    assert [e["type"] for e in (await harness.stream())[before:]] == ["page_hit"]


async def test_tag_display_name_is_the_first_spelling(harness):
    async with harness.browser() as one, harness.browser() as two:
        await harness.event(one, page_url="a", tags="ProductA")
        await harness.event(two, page_url="a", tags="producta")
    assert [c["tags"] async for c in harness.db.contacts.find()] == [["ProductA"], ["ProductA"]]
    assert await harness.db.tags.count_documents({}) == 1


async def test_stream_is_capped_approximately(harness):
    publisher = ActivityPublisher(harness.redis, harness.settings.stream_key, maxlen=10)
    now = dt.datetime.now(dt.UTC)
    for _ in range(5):
        await publisher.publish([Activity("custom_activity", "c1", now)] * 100, None)
    length = await harness.redis.xlen(harness.settings.stream_key)
    assert 10 <= length < 500


async def test_prefix_separates_tenants(make_harness):
    prefix = redis_prefix("tenant-a")
    async with make_harness(redis_prefix=prefix) as a:
        await a.pixel(page_url="p")
        assert a.settings.stream_key == f"{prefix}activity"
        assert await a.redis.xlen(f"{prefix}activity") == 2


async def test_redis_outage_does_not_fail_the_hit(harness):
    from redis.asyncio import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    broken = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    harness.services.recorder.publisher = ActivityPublisher(broken, "x", 10)
    body = await harness.event(page_url="p")
    assert body["success"] == 1 and body["id"]
    assert await harness.db.hits.count_documents({}) == 1
    await broken.aclose()


async def test_a_new_visitor_costs_no_timeline_write(harness):
    """contact_created is published but not stored: the timeline never shows it."""
    await harness.event(page_url="p")
    assert [e["type"] for e in await harness.stream()] == ["contact_created", "page_hit"]
    assert await harness.db.activities.count_documents({}) == 0


async def test_concurrent_publishes_share_one_round_trip_and_keep_their_own_ids(harness):
    """Requests that publish together (as those of one group commit do) are sent in one
    pipeline: the online set is trimmed once for all of them, and each caller gets the ids of
    its own entries, in its order."""
    import asyncio

    publisher = harness.services.publisher
    now = dt.datetime.now(dt.UTC)
    callers = [
        [Activity("page_hit", f"c{i}", now, {"n": f"{i}-{j}"}) for j in range(1 + i % 3)] for i in range(20)
    ]

    async def calls() -> tuple[int, int]:
        stats = await harness.redis.info("commandstats")
        return tuple(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("zremrangebyscore", "zadd"))

    before = await calls()
    results = await asyncio.gather(*(publisher.publish(activities, None) for activities in callers))
    after = await calls()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)  # one trim, one ZADD for all
    online = harness.settings.online_key
    assert all([await harness.redis.zscore(online, f"c{i}") == now.timestamp() for i in range(20)])
    entries = {
        (raw_id.decode()): json.loads(fields[b"event"])["n"]
        for raw_id, fields in await harness.redis.xrange(harness.settings.stream_key)
    }
    for i, ids in enumerate(results):
        assert [entries[entry_id] for entry_id in ids] == [f"{i}-{j}" for j in range(1 + i % 3)]
    assert list(entries.values())[-sum(len(c) for c in callers) :] == [
        f"{i}-{j}" for i in range(20) for j in range(1 + i % 3)
    ]


async def test_the_online_set_follows_hits_and_removals_in_their_order(harness):
    """One batch: a hit, then the contact's deletion (gone), then another contact's hit, a merge
    of it (the loser gone), a hit of the winner, and a hit of an id after its removal (back):
    the set is what the order says."""
    now = dt.datetime.now(dt.UTC)
    batch = [
        Activity("page_hit", "gone", now),
        Activity("contact_deleted", "gone", now),
        Activity("page_hit", "loser", now),
        Activity("contact_merged", "winner", now, {"merged_id": "loser"}),
        Activity("page_hit", "winner", now),
        Activity("page_hit", "back", now),
        Activity("contact_deleted", "back", now),
        Activity("page_hit", "back", now),
    ]
    await harness.services.publisher.publish(batch, None)
    members = await harness.redis.zrange(harness.settings.online_key, 0, -1)
    assert sorted(members) == [b"back", b"winner"]


async def test_publishing_survives_a_flushed_script_cache(harness):
    """Entries are appended by a script loaded once; after SCRIPT FLUSH (or a Redis restart) it
    is loaded again and nothing is lost or repeated."""
    now = dt.datetime.now(dt.UTC)
    publisher = harness.services.publisher
    first = await publisher.publish([Activity("page_hit", "a", now, {"n": "1"})], None)
    await harness.redis.script_flush()
    second = await publisher.publish([Activity("page_hit", "b", now, {"n": "2"})], None)
    entries = await harness.redis.xrange(harness.settings.stream_key)
    assert [raw_id.decode() for raw_id, _ in entries][-2:] == first + second
    assert [json.loads(fields[b"event"])["n"] for _, fields in entries][-2:] == ["1", "2"]
