"""When MongoDB or Redis stop answering: clear 503s (or the GIF), never a 500."""

import asyncio

import httpx
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contact_monitor.embedded import free_port, start_mongodb
from tests.conftest import CHROME
from tests.servers import create_key, server_env, start_server, stop_server


def test_mongodb_outage(redis_url, tmp_path):
    """A server on its own SecantusDB daemon, which then stops: the real outage, in another
    process (PyMongo leaves failed connection sockets to the garbage collector, PYTHON-3923)."""
    mongodb = start_mongodb(tmp_path / "mongo", storage=":memory:")
    port = free_port()
    env = server_env(
        CM_MONGODB_URI=mongodb.uri + "&serverSelectionTimeoutMS=300",
        CM_REDIS_URL=redis_url,
        CM_REDIS_PREFIX=f"cmtest:outage:{port}:",
        CM_DATA_DIR=str(tmp_path / "data"),
        CM_COOKIE_SECURE="false",
        CM_FIELD_CACHE_SECONDS="0",
    )
    server = start_server(env, port)
    try:
        key = create_key(env, "outage", "read")
        mongodb.stop()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": CHROME}) as client:
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["mongodb"].startswith("unavailable")
            pixel = client.get("/mtracking.gif?page_url=p")
            assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
            event = client.post("/mtc/event", data={"page_url": "p"})
            assert event.status_code == 503 and event.json()["success"] == 0
            mtc = client.get("/mtc")
            assert mtc.status_code == 503 and "unavailable" in mtc.json()["error"]
            form = client.post("/form/submit?formId=1&ajax=1", data={"email": "a@b.test"})
            assert form.status_code == 503 and form.json()["success"] == 0
            api = client.post(
                "/graphql", json={"query": "{ tags { name } }"}, headers={"Authorization": f"Bearer {key}"}
            )
            assert api.status_code == 503
            assert api.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    finally:
        stop_server(server)
        mongodb.stop()


async def test_redis_outage_health(harness):
    broken = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    object.__setattr__(harness.services, "redis", broken)
    try:
        health = await harness.client.get("/health")
        assert health.status_code == 503 and health.json()["redis"].startswith("unavailable")
        assert health.json()["mongodb"] == "ok"
    finally:
        await broken.aclose()


async def test_events_of_a_redis_outage_reach_the_stream_in_order_once_redis_returns(make_harness, tmp_path):
    """A Redis of the test's own, really stopped and started again on its port: the hits of the
    outage are answered and stored, their stream entries wait in the outbox, and reach the
    stream afterwards, in order, once each."""
    import json

    from contact_monitor.embedded import start_redis

    server = start_redis(tmp_path / "redis-outage")
    try:
        async with make_harness(redis_url=server.uri) as h:
            publisher = h.services.publisher
            await h.pixel(page_url="before")
            server.stop()
            for i in range(12):
                await h.pixel(page_url=f"during-{i}")  # the GIF, and the hit stored
            assert await h.db.hits.count_documents({}) == 13
            assert await h.services.storage.outbox.depth() >= 12
            server = start_redis(tmp_path / "redis-outage", port=server.port)
            await h.pixel(page_url="after")  # queued behind the outbox, to keep the order
            await asyncio.wait_for(publisher.drained.wait(), 60)
            redis = Redis.from_url(server.uri)
            try:
                entries = await redis.xrange(h.settings.stream_key)
            finally:
                await redis.aclose()
            urls = [
                event["hit"]["url"]
                for event in (json.loads(fields[b"event"]) for _, fields in entries)
                if event["type"] == "page_hit"
            ]
            assert urls == ["before", *(f"during-{i}" for i in range(12)), "after"]
            assert await h.services.storage.outbox.depth() == 0
    finally:
        server.stop()
