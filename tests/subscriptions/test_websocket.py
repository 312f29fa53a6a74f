"""The websocket protocol against real server processes: two of them sharing MongoDB and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from contact_monitor.embedded import free_port
from tests.conftest import CHROME
from tests.servers import (
    Store,
    create_key,
    start_server,
    stop_server,
)

DASHBOARD = "http://dash.test"
PROTOCOL = ["graphql-transport-ws"]


@dataclass
class Cluster:
    ingest_url: str  # server A
    ws_url: str  # server B
    key: str


@pytest.fixture(scope="module")
def cluster(mongodb_uri: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    store = Store.new(mongodb_uri, redis_url, "ws")
    env = store.env(
        CM_DATA_DIR=str(tmp_path_factory.mktemp("ws")),
        CM_DASHBOARD_ORIGINS=DASHBOARD,
        CM_COOKIE_SECURE="false",
    )
    ports = free_port(), free_port()
    servers = [start_server(env, port) for port in ports]
    key = create_key(env, "dash", "read")
    try:
        yield Cluster(f"http://127.0.0.1:{ports[0]}", f"ws://127.0.0.1:{ports[1]}/graphql", key)
    finally:
        for server in servers:
            stop_server(server)
        store.drop()


async def init(ws, key: str) -> dict:
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}))
    return json.loads(await ws.recv())


async def test_a_hit_through_one_process_reaches_a_subscriber_of_the_other(cluster):
    async with connect(cluster.ws_url, subprotocols=PROTOCOL, origin=DASHBOARD) as ws:
        assert (await init(ws, cluster.key))["type"] == "connection_ack"
        query = 'subscription { liveVisits(after: "0-0") { cursor type hit { url } contact { id } } }'
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        latencies = []
        async with httpx.AsyncClient(base_url=cluster.ingest_url, headers={"User-Agent": CHROME}) as browser:
            for i in range(20):
                url = f"https://s.test/{uuid.uuid4().hex}/{i}"
                sent = time.perf_counter()
                await browser.post("/mtc/event", data={"page_url": url})
                while True:
                    message = json.loads(await ws.recv())
                    assert message["type"] == "next", message
                    event = message["payload"]["data"]["liveVisits"]
                    if event["hit"]["url"] == url:
                        break
                latencies.append(time.perf_counter() - sent)
                assert event["type"] == "PAGE_HIT"
        ms = sorted(x * 1000 for x in latencies)
        print(f"ingest-to-delivery across processes: p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms")


async def test_ping_pong(cluster):
    async with connect(cluster.ws_url, subprotocols=PROTOCOL, origin=DASHBOARD) as ws:
        await init(ws, cluster.key)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"


@pytest.mark.parametrize("key", ["cm_invalid", "", None])
async def test_invalid_key_closes_with_4403(cluster, key):
    async with connect(cluster.ws_url, subprotocols=PROTOCOL, origin=DASHBOARD) as ws:
        payload = {} if key is None else {"authorization": f"Bearer {key}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4403


async def test_subscribe_before_init_closes_with_4401(cluster):
    async with connect(cluster.ws_url, subprotocols=PROTOCOL, origin=DASHBOARD) as ws:
        query = "subscription { liveVisits { cursor } }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4401


async def test_other_origins_are_refused(cluster):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(cluster.ws_url, subprotocols=PROTOCOL, origin="http://evil.test"):
            pass
    assert refused.value.response.status_code == 403


async def test_legacy_protocol_is_not_offered(cluster):
    async with connect(cluster.ws_url, subprotocols=["graphql-ws"], origin=DASHBOARD) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4406  # Subprotocol not acceptable


async def test_errors_over_the_websocket_carry_codes(cluster):
    async with connect(cluster.ws_url, subprotocols=PROTOCOL, origin=DASHBOARD) as ws:
        await init(ws, cluster.key)
        query = 'subscription { activity(after: "garbage") { cursor } }'
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        message = json.loads(await ws.recv())
        assert message["type"] == "next"
        assert message["payload"]["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        mutation = 'mutation { tagContact(id: "x", add: ["a"]) { id } }'
        await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": mutation}}))
        while (message := json.loads(await ws.recv())).get("id") != "2" or message["type"] != "next":
            pass  # the first operation's "complete"
        assert message["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"  # a read key


def readme_follow(ws_url: str, printed: asyncio.Queue) -> Any:
    """The README's Python live-feed example, verbatim but for its URL and its `print`."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in readme.split("```python\n")[1:] if "async def follow" in b).split("```")[0]
    code = block.replace("wss://track.example.com/graphql", ws_url).replace(
        'asyncio.run(follow("cm_..."))', ""
    )
    namespace: dict[str, Any] = {"print": lambda *args: printed.put_nowait(args)}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["follow"]


async def test_the_readme_python_example_follows_and_reports_errors(cluster):
    printed: asyncio.Queue = asyncio.Queue()
    follow = readme_follow(cluster.ws_url, printed)
    with pytest.raises(RuntimeError, match="invalid cursor"):
        await asyncio.wait_for(follow(cluster.key, after="garbage"), 30)
    following = asyncio.create_task(follow(cluster.key))
    try:
        url = f"https://s.test/readme/{uuid.uuid4().hex}"
        async with httpx.AsyncClient(base_url=cluster.ingest_url, headers={"User-Agent": CHROME}) as browser:
            # Until the subscription has started: hits before it are not for this follower.
            while True:
                await browser.post("/mtc/event", data={"page_url": url})
                try:
                    line = await asyncio.wait_for(printed.get(), 1)
                except TimeoutError:
                    continue
                break
        while url not in str(line):
            line = await asyncio.wait_for(printed.get(), 30)
        assert line[1] == "PAGE_HIT" and line[3] == {"url": url}
    finally:
        following.cancel()  # and wait for it: its websocket is closed by the cancellation
        with contextlib.suppress(asyncio.CancelledError):
            await following


def websockets_open(cluster: Cluster) -> float:
    http_url = cluster.ws_url.replace("ws://", "http://").removesuffix("/graphql")
    metrics = httpx.get(f"{http_url}/metrics", headers={"Authorization": f"Bearer {cluster.key}"}).text
    return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("cm_websockets "))


async def test_sockets_closed_while_their_history_is_sent_are_released(cluster):
    """A dashboard that resumes from an old cursor and leaves before its history is all sent:
    the server lets go of the socket (redis-py could end a cancelled XRANGE normally, and the
    operation then waited for a cancel that had come already; storage/redis_client.py)."""
    async with httpx.AsyncClient(base_url=cluster.ingest_url, headers={"User-Agent": CHROME}) as browser:
        for i in range(60):
            await browser.post("/mtc/event", data={"page_url": f"https://s.test/history/{i}"})
    before = websockets_open(cluster)
    for _ in range(6):
        # max_queue=None: a client holding more than `max_queue` unread frames stops reading, so
        # it would not see the server's answer to its close and wait out its close_timeout (10 s).
        async with connect(cluster.ws_url, subprotocols=PROTOCOL, origin=DASHBOARD, max_queue=None) as ws:
            await init(ws, cluster.key)
            query = 'subscription { activity(after: "0") { cursor type } }'
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            for _ in range(2):
                await ws.recv()
    deadline = time.monotonic() + 10
    while websockets_open(cluster) > before:  # the server's own count: no event to wait on
        assert time.monotonic() < deadline, f"{websockets_open(cluster) - before:.0f} sockets never released"
        await asyncio.sleep(0.1)
