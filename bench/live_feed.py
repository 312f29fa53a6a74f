"""Live-feed benchmark: what 200 dashboards cost the server, and what they cost ingest.

    python -m bench.live_feed [--subscribers 200] [--rate 200] [--seconds 8] [--operations 50]
                              [--no-shared]

Starts `contact-monitor serve` (one worker, embedded SecantusDB and Redis), creates a read key,
then in one run:

1. ingest at full speed with no subscriber (wrk, the ingest benchmark's pixel mix): hits/s;
2. hits offered at `--rate` per second with no subscriber: the server's CPU for the hits alone;
3. `--subscribers` websockets subscribed to the README's dashboard subscription, hits offered at
   `--rate`: frames delivered against expected, ingest-to-delivery p50/p99 (the event's
   `occurredAt`, stamped when the hit arrived, to its receipt), and the server CPU spent on
   fan-out per delivered frame (this phase's CPU minus phase 2's, over the frames);
4. ingest at full speed with those subscribers still open: hits/s (frames beyond what the
   sockets take become LAGGED markers: ingest must not slow down for viewers);
5. the same as 3 with the subscribers spread over `--operations` distinct operations (different
   selections), so the shared-execution path is not the only one measured.

The subscribers are raw websocket clients (no compression, one asyncio protocol each, frames
counted from their headers; the JSON of every tenth subscriber's frames is parsed for latency), so
that the client, which runs on the same cores, costs as little as possible. Prints one JSON line.
`--no-shared` runs the server with CM_SHARED_FEEDS=false (every subscription executed on its own:
the behaviour before shared execution), for a before/after comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.ingest import UA, command_of, cpu_seconds, descendants, run_wrk, write_mix
from bench.servers import create_key, start_service, wait_for
from contact_monitor.embedded import free_port

# The README's dashboard subscription (Live feed, "In a browser").
DASHBOARD = (
    "subscription($after: String) { liveVisits(after: $after, filter: {identifiedOnly: false}) {"
    " cursor type contact { id email } hit { url title } skipped } }"
)
# Selections for the run with distinct operations: each subscriber's document differs.
FIELDS = [
    "cursor",
    "type",
    "occurredAt",
    "contact { id }",
    "contact { email isAnonymous }",
    "hit { url }",
    "hit { title }",
    "hit { utm { source } }",
    "skipped",
    "data",
]


def distinct_operation(n: int) -> str:
    chosen = [FIELDS[i] for i in range(len(FIELDS)) if (n >> i) & 1]
    return "subscription { liveVisits { hit { url } " + " ".join(chosen) + " } }"


# When each offered hit was sent, by its URL: ingest-to-delivery is measured from there.
SENT: dict[str, float] = {}


class Subscriber(asyncio.Protocol):
    """A minimal graphql-transport-ws client: handshake without extensions, `connection_init`,
    one `subscribe`, then frames counted as they arrive."""

    def __init__(self, host: str, key: str, query: str, sample: bool, ready: asyncio.Event) -> None:
        self.host, self.key, self.query, self.sample, self.ready = host, key, query, sample, ready
        self.buffer = b""
        self.upgraded = False
        self.subscribed = False
        self.frames = 0
        self.lagged = 0
        self.latencies: list[float] = []
        self.closed_with: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        request = (
            "GET /graphql HTTP/1.1\r\n"
            f"Host: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        )
        transport.write(request.encode())

    def send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        # Masked with a zero key (valid, and the payload needs no XOR).
        if len(payload) < 126:
            header = struct.pack("!BB", 0x81, 0x80 | len(payload))
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        assert self.transport is not None
        self.transport.write(header + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            assert self.buffer.startswith(b"HTTP/1.1 101"), self.buffer[:200]
            self.upgraded, self.buffer = True, self.buffer[end + 4 :]
            self.send({"type": "connection_init", "payload": {"authorization": f"Bearer {self.key}"}})
        buffer, position, received = self.buffer, 0, time.time()
        while len(buffer) - position >= 2:
            opcode, length = buffer[position] & 0x0F, buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if len(buffer) - position < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, position + 2)
                start += 2
            elif length == 127:
                if len(buffer) - position < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, position + 2)
                start += 8
            if len(buffer) < start + length:
                break
            payload = buffer[start : start + length]
            position = start + length
            if opcode == 1:
                self.text(payload, received)
            elif opcode == 8:
                self.closed_with = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            elif opcode == 9:  # ping: pong with the same payload
                assert self.transport is not None
                self.transport.write(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + b"\0\0\0\0" + payload)
        self.buffer = buffer[position:]

    def text(self, payload: bytes, received: float) -> None:
        if not self.subscribed:
            message = json.loads(payload)
            assert message["type"] == "connection_ack", message
            self.send({"id": "1", "type": "subscribe", "payload": {"query": self.query}})
            self.subscribed = True
            self.ready.set()
            return
        if b'"LAGGED"' in payload:
            self.lagged += 1
            return
        self.frames += 1
        if self.sample:
            event = json.loads(payload)["payload"]["data"]["liveVisits"]
            sent = SENT.get((event.get("hit") or {}).get("url", ""))
            if sent is not None:
                self.latencies.append(received - sent)


async def open_subscribers(port: int, key: str, queries: list[str]) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    subscribers = []
    for i, query in enumerate(queries):
        ready = asyncio.Event()
        _, subscriber = await loop.create_connection(
            lambda q=query, r=ready, s=i % 10 == 0: Subscriber("127.0.0.1", key, q, s, r), "127.0.0.1", port
        )
        await asyncio.wait_for(ready.wait(), 30)
        subscribers.append(subscriber)
    return subscribers


async def offer_hits(port: int, rate: float, seconds: float, tag: str) -> int:
    """Pixel hits at `rate` per second over 8 keep-alive connections, in the ingest benchmark's
    mix: each connection is a device, 80% of its hits come back with its `mautic_device_id`
    cookie, 20% are new visitors. Returns the number answered 200."""
    connections = 8
    total = int(rate * seconds)
    answered = 0
    start = time.perf_counter()
    counter = iter(range(total))

    async def connection() -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        device = ""
        for i in counter:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            url = f"https://shop.example.com/{tag}/{i}"
            SENT[url] = time.time()
            cookie = f"Cookie: mautic_device_id={device}\r\n" if device and random.random() < 0.8 else ""
            writer.write(
                f"GET /mtracking.gif?page_url={quote(url, safe='')}&page_title=P{i} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nUser-Agent: {UA}\r\n{cookie}\r\n".encode()
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            headers = [line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line]
            length = next(int(value) for name, value in headers if name.lower() == "content-length")
            for name, value in headers:
                if name.lower() == "set-cookie" and value.strip().startswith("mautic_device_id="):
                    device = device or value.strip().split(";")[0].split("=", 1)[1]
            await reader.readexactly(length)
            answered += head.startswith("HTTP/1.1 200")
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return answered


async def settle(subscribers: list[Subscriber], expected: int) -> None:
    """Until every subscriber has its expected frames (or LAGGED markers), or 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(s.frames >= expected or s.lagged for s in subscribers):
            return
        await asyncio.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1) if ordered else -1.0


class Server:
    def __init__(self, process: Any) -> None:
        self.pids = [
            p
            for p in descendants(process.pid)
            if "secantus" not in command_of(p) and "redis" not in command_of(p)
        ]

    def cpu(self) -> float:
        return cpu_seconds(self.pids)


async def fan_out_phase(
    server: Server,
    port: int,
    key: str,
    queries: list[str],
    rate: float,
    seconds: float,
    hits_alone_cpu_per_hit: float,
    tag: str,
) -> tuple[dict[str, Any], list[Subscriber]]:
    subscribers = await open_subscribers(port, key, queries)
    await asyncio.sleep(0.5)  # every subscription registered
    before = server.cpu()
    answered = await offer_hits(port, rate, seconds, tag)
    await settle(subscribers, answered)
    cpu = server.cpu() - before
    frames = sum(s.frames for s in subscribers)
    latencies = [value for s in subscribers for value in s.latencies]
    fan_out = cpu - hits_alone_cpu_per_hit * answered
    return {
        "subscribers": len(subscribers),
        "distinct_operations": len(set(queries)),
        "hits_offered_per_s": rate,
        "hits_answered": answered,
        "frames_expected": answered * len(subscribers),
        "frames_delivered": frames,
        "lagged_markers": sum(s.lagged for s in subscribers),
        "delivery_p50_ms": percentile(latencies, 0.5),
        "delivery_p99_ms": percentile(latencies, 0.99),
        "server_cpu_us_per_frame": round(fan_out / max(frames, 1) * 1e6, 1),
    }, subscribers


def close_all(subscribers: list[Subscriber]) -> None:
    for subscriber in subscribers:
        if subscriber.transport is not None:
            subscriber.transport.close()


async def measure(
    args: argparse.Namespace, process: Any, port: int, key: str, script: Path
) -> dict[str, Any]:
    server = Server(process)
    url = f"http://127.0.0.1:{port}/"
    alone_full = await asyncio.to_thread(run_wrk, url, script, args.seconds, 50)
    await asyncio.sleep(2)  # what the full-speed phase left behind (write-behind, outbox) is done
    before = server.cpu()
    answered = await offer_hits(port, args.rate, args.seconds, "alone")
    per_hit = (server.cpu() - before) / max(answered, 1)

    shared, subscribers = await fan_out_phase(
        server, port, key, [DASHBOARD] * args.subscribers, args.rate, args.seconds, per_hit, "one"
    )
    with_full = await asyncio.to_thread(run_wrk, url, script, args.seconds, 50)
    close_all(subscribers)
    await asyncio.sleep(3)
    queries = [distinct_operation(i % args.operations + 1) for i in range(args.subscribers)]
    distinct, subscribers = await fan_out_phase(
        server, port, key, queries, args.rate, args.seconds, per_hit, "many"
    )
    close_all(subscribers)
    return {
        "benchmark": "live_feed",
        "shared_execution": not args.no_shared,
        "linger_ms": args.linger_ms,
        "ingest_full_speed_hits_per_s": {
            "0_subscribers": alone_full["rps"],
            f"{args.subscribers}_subscribers": with_full["rps"],
        },
        "ingest_p99_ms": {
            "0_subscribers": alone_full["p99_ms"],
            f"{args.subscribers}_subscribers": with_full["p99_ms"],
        },
        "server_cpu_us_per_hit_alone": round(per_hit * 1e6),
        "one_operation": shared,
        "distinct_operations": distinct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0, help="hits per second offered")
    parser.add_argument("--seconds", type=int, default=8, help="length of each phase")
    parser.add_argument("--operations", type=int, default=50, help="distinct operations in phase 5")
    parser.add_argument("--linger-ms", type=int, default=10, help="CM_LIVE_LINGER_MS of the server")
    parser.add_argument("--no-shared", action="store_true", help="run the server with CM_SHARED_FEEDS=false")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    data_dir = Path(tempfile.mkdtemp(prefix="cm-bench-live-"))
    settings = {
        "CM_SHARED_FEEDS": "false" if args.no_shared else "true",
        "CM_WS_MAX_PER_KEY": "1000",
        "CM_LIVE_LINGER_MS": str(args.linger_ms),
    }
    port = free_port()
    process = start_service(data_dir, port, "--log-level", "warning", settings=settings)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process)
        key = create_key(data_dir, "read", **settings)
        script = data_dir / "mix.lua"
        write_mix(script, f"http://127.0.0.1:{port}", 200)  # the ingest benchmark's mix
        print(json.dumps(asyncio.run(measure(args, process, port, key, script))))
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
