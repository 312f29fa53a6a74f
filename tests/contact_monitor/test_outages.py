"""When MongoDB or Redis stop answering: clear 503s (or the GIF), never a 500."""

import asyncio

import httpx
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contact_monitor.embedded import free_port, start_mongodb
from tests.conftest import CHROME
from tests.servers import create_key, forget_prefix, redis_prefix, server_env, start_server, stop_server


def test_mongodb_outage(redis_url, tmp_path):
    """A server on its own SecantusDB daemon, which then stops: the real outage, in another
    process (PyMongo leaves failed connection sockets to the garbage collector, PYTHON-3923)."""
    mongodb = start_mongodb(tmp_path / "mongo", storage=":memory:")
    port = free_port()
    env = server_env(
        CM_MONGODB_URI=mongodb.uri + "&serverSelectionTimeoutMS=300",
        CM_REDIS_URL=redis_url,
        CM_REDIS_PREFIX=redis_prefix(f"outage-{port}"),
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
        forget_prefix(redis_url, redis_prefix(f"outage-{port}"))
        mongodb.stop()


def test_a_tracking_request_waits_for_mongodb_no_longer_than_its_timeout(redis_url, tmp_path):
    """The driver's own server selection timeout (10 s) left as it is: with
    CM_TRACK_TIMEOUT_SECONDS=1, the first pixel of an outage gets its GIF within a couple of
    seconds and is spooled under the hit id fixed at its receipt; /mtc/event answers 503 as
    fast. When MongoDB is back, the spooled hit is recorded under that id."""
    import json
    import time

    from pymongo import MongoClient

    mongodb = start_mongodb(tmp_path / "mongo", storage=":memory:")
    port = free_port()
    data_dir = tmp_path / "data"
    env = server_env(
        CM_MONGODB_URI=mongodb.uri,
        CM_REDIS_URL=redis_url,
        CM_REDIS_PREFIX=redis_prefix(f"deadline-{port}"),
        CM_DATA_DIR=str(data_dir),
        CM_COOKIE_SECURE="false",
        CM_TRACK_TIMEOUT_SECONDS="1",
    )
    server = start_server(env, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": CHROME}) as client:
            assert client.get("/mtracking.gif?page_url=before").status_code == 200
            mongodb.stop()
            started = time.monotonic()
            pixel = client.get("/mtracking.gif?page_url=during", timeout=30)
            assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
            assert time.monotonic() - started < 6, "the pixel waited for the driver's 10 s"
            [spooled] = [
                json.loads(line)
                for path in (data_dir / "spool").glob("*.jsonl")
                for line in path.read_text().splitlines()
            ]
            assert "page_url=during" in spooled["query"]

            started = time.monotonic()
            event = client.post("/mtc/event", data={"page_url": "event"}, timeout=30)
            assert event.status_code == 503 and event.headers["retry-after"]
            assert time.monotonic() - started < 6

            mongodb = start_mongodb(tmp_path / "mongo", storage=":memory:", port=mongodb.port)
            with MongoClient(mongodb.uri) as mongo:
                hits = mongo["contact_monitor"].hits
                deadline = time.monotonic() + 60
                while hits.count_documents({}) == 0 and time.monotonic() < deadline:
                    time.sleep(0.2)  # the replayer's own period (ingest/spool.py): nothing to await
                [hit] = list(hits.find())
            assert str(hit["_id"]) == spooled["hit_id"] and hit["url"] == "during"
    finally:
        stop_server(server)
        forget_prefix(redis_url, redis_prefix(f"deadline-{port}"))
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


class Load:
    """Four clients posting hits to /mtc/event; `answered` holds the ids of the hits answered 200
    (the `mautic_referer_id` cookie)."""

    def __init__(self, port: int, requests: int = 40) -> None:
        import threading

        self.port = port
        self.requests = requests
        self.answered: list[str] = []
        self.workers = [threading.Thread(target=self.run, args=(w,)) for w in range(4)]
        for worker in self.workers:
            worker.start()

    def run(self, worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"User-Agent": CHROME}) as client:
            for i in range(self.requests):
                client.cookies.clear()
                try:
                    response = client.post("/mtc/event", data={"page_url": f"w{worker}-{i}"}, timeout=30)
                except httpx.HTTPError:
                    continue  # the server is stopping or the database is down: not answered
                if response.status_code == 200:
                    self.answered.append(response.cookies["mautic_referer_id"])

    def wait_for(self, answered: int) -> None:
        import threading

        while len(self.answered) < answered:
            threading.Event().wait(0.01)

    def join(self) -> None:
        for worker in self.workers:
            worker.join(120)


def test_hits_answered_before_the_database_is_killed_survive_it(redis_url, tmp_path):
    """SIGKILL of the embedded SecantusDB (durable: its log synced at every commit) in the middle
    of a load: every hit answered 200 is in MongoDB once it is started again on its files."""
    import os
    import signal

    from pymongo import MongoClient

    storage_dir = tmp_path / "db"
    mongodb = start_mongodb(storage_dir)  # durable, on disk, as `serve` starts it
    port = free_port()
    env = server_env(
        CM_MONGODB_URI=mongodb.uri + "&serverSelectionTimeoutMS=20000",
        CM_REDIS_URL=redis_url,
        CM_REDIS_PREFIX=redis_prefix(f"kill-{port}"),
        CM_DATA_DIR=str(tmp_path / "data"),
        CM_COOKIE_SECURE="false",
    )
    server = start_server(env, port)
    try:
        load = Load(port)
        load.wait_for(40)  # some hits stored, more arriving
        os.kill(mongodb.process.pid, signal.SIGKILL)
        mongodb.process.wait(10)
        killed_at = len(load.answered)
        mongodb = start_mongodb(storage_dir, port=mongodb.port)
        load.join()
        answered = load.answered
        assert killed_at >= 40 and len(answered) >= killed_at
        with MongoClient(mongodb.uri) as client:
            stored = {str(doc["_id"]) for doc in client["contact_monitor"].hits.find({}, {"_id": 1})}
        missing = [hit for hit in answered if hit not in stored]
        assert not missing, f"{len(missing)} of {len(answered)} answered hits were lost"
    finally:
        stop_server(server)
        forget_prefix(redis_url, redis_prefix(f"kill-{port}"))
        mongodb.stop()


def test_sigterm_drains_what_was_answered(mongodb_uri, redis_url, tmp_path):
    """SIGTERM under load: uvicorn finishes the requests in flight and the lifespan writes the
    pending batches before exit; every hit answered 200 is stored."""
    import uuid

    from pymongo import MongoClient

    database = f"cmtest_term_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = server_env(
        CM_MONGODB_URI=mongodb_uri,
        CM_MONGODB_DB=database,
        CM_REDIS_URL=redis_url,
        CM_REDIS_PREFIX=redis_prefix(database),
        CM_DATA_DIR=str(tmp_path / "data"),
        CM_COOKIE_SECURE="false",
    )
    server = start_server(env, port)
    try:
        load = Load(port)
        load.wait_for(30)
        stop_server(server)  # SIGTERM, then wait for the exit
        load.join()
        with MongoClient(mongodb_uri) as client:
            stored = {str(doc["_id"]) for doc in client[database].hits.find({}, {"_id": 1})}
            client.drop_database(database)
        assert load.answered and all(hit in stored for hit in load.answered)
    finally:
        stop_server(server)
        forget_prefix(redis_url, redis_prefix(database))


async def test_pixel_hits_of_a_mongodb_outage_are_spooled_and_recorded_once_it_returns(
    make_harness, tmp_path
):
    """A SecantusDB of the test's own, really stopped and started again on its files: the pixel
    answers its GIF meanwhile, the hits wait on disk, and are recorded afterwards, each once,
    with the parameters and the time they arrived with."""
    from ingest.routes import GIF, replay_hit

    mongodb = start_mongodb(tmp_path / "db")
    try:
        async with make_harness(
            mongodb_uri=mongodb.uri + "&serverSelectionTimeoutMS=300", data_dir=tmp_path / "data"
        ) as h:
            spool = h.pipeline.spool
            await h.pixel(page_url="before")
            mongodb.stop()
            for i in range(5):
                response = await h.client.get("/mtracking.gif", params={"page_url": f"during-{i}"})
                assert response.status_code == 200 and response.content == GIF
            assert spool.open  # after the first failure, straight to the spool
            lines = b"".join(path.read_bytes() for path in spool.pending()).splitlines()
            assert len(lines) == 5 and spool.depth() == 5
            health = (await h.client.get("/health")).json()
            assert health["mongodb"].startswith("unavailable") and health["spool_depth"] == 5
            spooled = h.services.metrics.registry.get_sample_value(
                "cm_tracking_requests_total", {"endpoint": "pixel", "result": "spooled"}
            )
            assert spooled == 5
            # a replay that was interrupted and runs again must not write a hit twice
            (spool.directory / "0-earlier-run.jsonl").write_bytes(lines[0] + b"\n")
            mongodb = start_mongodb(tmp_path / "db", port=mongodb.port)
            # Until the app's own client sees the server again (its selection timeout is 300 ms
            # here, shorter than a rediscovery on a busy machine).
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    await h.services.storage.client.admin.command("ping")
                    break
                except PyMongoError:
                    assert asyncio.get_running_loop().time() < deadline, "MongoDB did not come back"
            state = {"services": h.services, "pipeline": h.pipeline, "hub": h.hub}
            await spool.replay(state, replay_hit)  # the background replayer may have begun: one at a time
            urls = sorted([doc["url"] async for doc in h.db.hits.find({}, {"url": 1})])
            assert urls == ["before", *(f"during-{i}" for i in range(5))]
            assert spool.pending() == [] and spool.replayed.is_set()
    finally:
        mongodb.stop()
