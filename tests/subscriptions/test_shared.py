"""Shared execution of live subscriptions (subscriptions/shared.py, api/live.py) against real
server processes sharing MongoDB and Redis: one that executes every subscription on its own
(CM_SHARED_FEEDS=false), one that shares, and one with a tiny queue that gives up stuck sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from contact_monitor.embedded import free_port
from tests.conftest import CHROME
from tests.servers import (
    Store,
    create_key,
    start_server,
    stop_server,
)

PROTOCOL = ["graphql-transport-ws"]
TIMEOUT = 30


@dataclass
class Servers:
    unshared: int
    shared: int
    strict: int  # CM_SUBSCRIPTION_QUEUE=5, CM_WS_STUCK_SECONDS=2
    key: str


@pytest.fixture(scope="module")
def servers(mongodb_uri: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    store = Store.new(mongodb_uri, redis_url, "shared")
    settings = [
        {"CM_SHARED_FEEDS": "false"},
        {},
        {"CM_SUBSCRIPTION_QUEUE": "5", "CM_WS_STUCK_SECONDS": "2"},
    ]
    ports = [free_port() for _ in settings]
    envs = [
        store.env(**extra, CM_COOKIE_SECURE="false", CM_DATA_DIR=str(tmp_path_factory.mktemp("s")))
        for extra in settings
    ]
    with ThreadPoolExecutor() as pool:  # started side by side: each warms its parser up for seconds
        processes = list(pool.map(start_server, envs, ports))
    key = create_key(store.env(), "dash", "read")
    try:
        yield Servers(*ports, key=key)
    finally:
        for process in processes:
            stop_server(process)
        store.drop()


async def subscribe(port: int, key: str, documents: dict[str, tuple[str, dict | None]]) -> ClientConnection:
    """One socket with an operation per entry of `documents` (operation id -> query, variables)."""
    ws = await connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=PROTOCOL, max_queue=None)
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    for operation_id, (query, variables) in documents.items():
        payload = {"query": query, "variables": variables}
        await ws.send(json.dumps({"id": operation_id, "type": "subscribe", "payload": payload}))
    return ws


async def metric(client: httpx.AsyncClient, port: int, key: str, name: str) -> float:
    response = await client.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {key}"}
    )
    line = next((row for row in response.text.splitlines() if row.startswith(f"{name} ")), f"{name} 0")
    return float(line.split()[1])


async def reaches(client: httpx.AsyncClient, port: int, key: str, name: str, value: float) -> None:
    """Until the server's /metrics shows `name` at `value` or more (subscriptions start after
    the `subscribe` message: events published before that would not reach them)."""
    deadline = time.monotonic() + TIMEOUT
    while await metric(client, port, key, name) < value:
        assert time.monotonic() < deadline, f"{name} did not reach {value}"
        await asyncio.sleep(0.05)


async def collect(ws: ClientConnection, done: dict[str, object]) -> dict[str, list[dict]]:
    """Payloads per operation id until each operation's `done(payload)` holds."""
    frames: dict[str, list[dict]] = {operation_id: [] for operation_id in done}
    pending = set(done)
    async with asyncio.timeout(TIMEOUT):
        while pending:
            message = json.loads(await ws.recv())
            assert message["type"] == "next", message
            frames[message["id"]].append(message["payload"])
            if message["id"] in pending and done[message["id"]](message["payload"]):  # type: ignore[operator]
                pending.discard(message["id"])
    return frames


EVENT = "cursor type occurredAt contact { id email isAnonymous } data skipped oldestCursor"
DOCUMENTS = {
    # The README's dashboard subscription.
    "dashboard": (
        "subscription($after: String) { liveVisits(after: $after, filter: {identifiedOnly: false}) {"
        " cursor type contact { id email } hit { url title } skipped } }",
        {"after": None},
    ),
    "everything": (
        f"subscription {{ activity {{ {EVENT} hit {{ id url title referrer utm {{ source medium campaign }} "
        "timeOnPage leftAt contact { id email } } } }",
        None,
    ),
    "created": (
        "subscription { activity(filter: {types: [CONTACT_CREATED]}) { type contact { id } } }",
        None,
    ),
    "fragment": (
        "subscription Visits($f: ActivityFilter) { liveVisits(filter: $f) { ...E __typename u: hit { url } } }"
        " fragment E on ActivityEvent { cursor type }",
        {"f": {"urlContains": "/b/"}},
    ),
}


def finished(end_url: str, end_contact: list[str]) -> dict[str, object]:
    def hit_done(payload: dict) -> bool:
        event = next(iter(payload["data"].values()))
        return (event.get("hit") or event.get("u") or {}).get("url") == end_url

    def created_done(payload: dict) -> bool:
        return payload["data"]["activity"]["contact"]["id"] == end_contact[0]

    return {"dashboard": hit_done, "everything": hit_done, "created": created_done, "fragment": hit_done}


async def test_shared_execution_sends_what_a_lone_execution_sends(servers):
    """Each document on the unshared server, and twice on the shared one (two sockets: one
    group), receives the same payloads for the same events, in the same order."""
    lone = await subscribe(servers.unshared, servers.key, DOCUMENTS)
    # The second socket also runs the dashboard under another id: same group, its own frames.
    shared = [
        await subscribe(servers.shared, servers.key, DOCUMENTS),
        await subscribe(servers.shared, servers.key, {**DOCUMENTS, "again": DOCUMENTS["dashboard"]}),
    ]
    async with httpx.AsyncClient() as client:
        await reaches(client, servers.unshared, servers.key, "cm_subscribers", len(DOCUMENTS))
        await reaches(client, servers.shared, servers.key, "cm_subscribers", 2 * len(DOCUMENTS) + 1)
        assert await metric(client, servers.shared, servers.key, "cm_shared_feeds") == len(DOCUMENTS)
    run = uuid.uuid4().hex[:8]
    end_url = f"https://s.test/b/{run}/end"
    end_contact: list[str] = []
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{servers.shared}", headers={"User-Agent": CHROME}
        ) as browser:
            for i in range(6):
                browser.cookies.clear()
                await browser.post(
                    "/mtc/event",
                    data={
                        "page_url": f"https://s.test/{'ab'[i % 2]}/{run}/{i}?utm_source=news&utm_campaign=w",
                        "page_title": f"Page {i}",
                    },
                )
                await browser.post("/mtc/event", data={"page_url": f"https://s.test/a/{run}/{i}/again"})
            browser.cookies.clear()
            response = await browser.post("/mtc/event", data={"page_url": end_url})
            end_contact.append(response.json()["id"])
        expected = await collect(lone, finished(end_url, end_contact))
        assert await collect(shared[0], finished(end_url, end_contact)) == expected
        done = finished(end_url, end_contact)
        received = await collect(shared[1], {**done, "again": done["dashboard"]})
        assert received == {**expected, "again": expected["dashboard"]}
    finally:
        for ws in (lone, *shared):
            await ws.close()
    assert len(expected["everything"]) >= 20
    assert {next(iter(p["data"].values()))["type"] for p in expected["everything"]} >= {
        "PAGE_HIT",
        "CONTACT_CREATED",
    }
    assert all(p["data"]["liveVisits"]["u"]["url"].count("/b/") for p in expected["fragment"])
    assert len(expected["created"]) == 7


async def test_subscribers_resuming_from_different_cursors_share_one_group(servers):
    """`after` only decides where a member's history starts: each gets exactly its history, then
    the live events once, from one group."""
    run = uuid.uuid4().hex[:8]
    query = DOCUMENTS["dashboard"][0]
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{servers.shared}", headers={"User-Agent": CHROME}
    ) as browser:
        cursors = []
        watcher = await subscribe(servers.shared, servers.key, {"w": (query, {"after": None})})
        async with httpx.AsyncClient() as client:
            await reaches(client, servers.shared, servers.key, "cm_shared_feeds", 1)
        for i in range(3):
            await browser.post("/mtc/event", data={"page_url": f"https://s.test/{run}/history/{i}"})
            cursors.append(
                (await collect(watcher, {"w": lambda p: True}))["w"][0]["data"]["liveVisits"]["cursor"]
            )
        early = await subscribe(servers.shared, servers.key, {"1": (query, {"after": cursors[0]})})
        late = await subscribe(servers.shared, servers.key, {"1": (query, {"after": cursors[1]})})
        first = await collect(early, {"1": lambda p: p["data"]["liveVisits"]["cursor"] == cursors[2]})
        second = await collect(late, {"1": lambda p: p["data"]["liveVisits"]["cursor"] == cursors[2]})
        assert [p["data"]["liveVisits"]["cursor"] for p in first["1"]] == cursors[1:]
        assert [p["data"]["liveVisits"]["cursor"] for p in second["1"]] == cursors[2:]
        await browser.post("/mtc/event", data={"page_url": f"https://s.test/{run}/live"})
        for ws in (early, late, watcher):
            live = await collect(ws, {next(iter(["1", "w"][ws is watcher :])): lambda p: True})
            assert next(iter(live.values()))[0]["data"]["liveVisits"]["hit"]["url"].endswith("/live")
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {servers.key}"}) as client:
            metrics = (await client.get(f"http://127.0.0.1:{servers.shared}/metrics")).text
        assert "cm_shared_feeds 1.0" in metrics
        for ws in (early, late, watcher):
            await ws.close()


def raw_subscriber(port: int, key: str, query: str, buffer: int) -> tuple[socket.socket, BinaryIO]:
    """A websocket client that subscribes and then does not read, with a small receive buffer
    so that the server's buffers fill quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"HTTP/1.1 101")
    while reader.readline() != b"\r\n":
        pass

    def send(message: dict) -> None:
        data = json.dumps(message).encode()
        sock.sendall(struct.pack("!BBH", 0x81, 0xFE, len(data)) + b"\0\0\0\0" + data)

    send({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
    _, payload = read_frame(reader)
    assert json.loads(payload)["type"] == "connection_ack"
    send({"id": "1", "type": "subscribe", "payload": {"query": query}})
    return sock, reader


def read_frame(reader: BinaryIO) -> tuple[int, bytes]:
    first, second = reader.read(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", reader.read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", reader.read(8))
    return first & 0x0F, reader.read(length)


def drain(source: BinaryIO) -> tuple[list[dict], int | None]:
    """Frames until the close frame (its code) or the end of the connection (None)."""
    frames: list[dict] = []
    try:
        while True:
            opcode, payload = read_frame(source)
            if opcode == 1:
                frames.append(json.loads(payload))
            elif opcode == 8:
                return frames, struct.unpack("!H", payload[:2])[0]
    except (ConnectionError, ValueError, struct.error):
        return frames, None


async def until_given_up(
    port: int, key: str, healthy: ClientConnection, client: httpx.AsyncClient, given_up: float
) -> list[str]:
    """Hits of ~8 KiB frames until the server gives a socket up; the healthy socket gets each
    of them, in order, meanwhile. Returns the URLs sent."""
    run = uuid.uuid4().hex[:8]
    sent: list[str] = []
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": CHROME}
    ) as browser:
        for i in range(2000):
            url = f"https://s.test/{run}/{i}/" + "x" * 4000
            await browser.post("/mtc/event", data={"page_url": url, "page_referrer": "r" * 4000})
            sent.append(url)
            async with asyncio.timeout(TIMEOUT):
                message = json.loads(await healthy.recv())
            assert message["payload"]["data"]["liveVisits"]["hit"]["url"] == url
            if i % 4 == 3 and await metric(client, port, key, "cm_stuck_sockets_closed") > given_up:
                return sent
    raise AssertionError("the socket that stopped reading was never given up")


async def test_a_stuck_socket_is_closed_with_4410_while_a_healthy_one_gets_everything(servers):
    """A socket that stops reading is given up; read again at once, it gets what was queued,
    the LAGGED marker last, then the 4410 close. One that never reads cannot take even the
    close: its connection is dropped. A healthy socket gets every event meanwhile."""
    query = "subscription { liveVisits { cursor type skipped hit { url referrer } } }"
    port, key = servers.strict, servers.key
    healthy = await subscribe(port, key, {"1": (query, None)})
    async with httpx.AsyncClient() as client:
        await reaches(client, port, key, "cm_subscribers", 1)
        given_up = await metric(client, port, key, "cm_stuck_sockets_closed")
        dropped = await metric(client, port, key, "cm_stuck_sockets_dropped")

        silent, silent_reader = await asyncio.to_thread(raw_subscriber, port, key, query, 4096)
        await reaches(client, port, key, "cm_subscribers", 2)
        await until_given_up(port, key, healthy, client, given_up)
        await reaches(client, port, key, "cm_stuck_sockets_dropped", dropped + 1)
        _, silent_code = await asyncio.to_thread(drain, silent_reader)  # only now: dropped
        silent.close()
        assert silent_code is None

        stuck, reader = await asyncio.to_thread(raw_subscriber, port, key, query, 4096)
        await reaches(client, port, key, "cm_subscribers", 2)
        sent = await until_given_up(port, key, healthy, client, given_up + 1)
        frames, code = await asyncio.to_thread(drain, reader)  # reads again at once
        stuck.close()
        assert await metric(client, port, key, "cm_stuck_sockets_dropped") == dropped + 1
    await healthy.close()
    assert code == 4410
    events = [f["payload"]["data"]["liveVisits"] for f in frames if f.get("type") == "next"]
    lagged = [event for event in events if event["type"] == "LAGGED"]
    assert lagged and lagged[0]["skipped"] > 0 and events[-1] is lagged[-1]
    delivered = [event["hit"]["url"] for event in events if event["type"] == "PAGE_HIT"]
    assert delivered == sent[: len(delivered)]  # in order, nothing out of place before the gap
    assert lagged[0]["cursor"] == [e for e in events if e["type"] == "PAGE_HIT"][-1]["cursor"]
