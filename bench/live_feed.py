"""Live-feed benchmark: N websocket subscribers of liveVisits while hits are ingested.

    python bench/live_feed.py [--subscribers 200] [--hits 200] [--rate 50]

Starts `contact-monitor serve` on the embedded default, creates a read key, opens N
graphql-transport-ws connections, then ingests hits over HTTP at about --rate per second. Reports
delivered events/s against the ideal (hits/s x subscribers) and the ingest-to-delivery latency
(the event's occurred_at, stamped by the server when the hit arrived, to the client's receipt).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contact_monitor.embedded import free_port  # noqa: E402

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
QUERY = "subscription { liveVisits { cursor occurredAt hit { url } } }"


async def subscriber(
    url: str,
    key: str,
    expected: int,
    latencies: list[float],
    ready: asyncio.Event,
    counter: list[int],
    done: asyncio.Event,
) -> None:
    async with connect(url, subprotocols=["graphql-transport-ws"], max_queue=None) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": QUERY}}))
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        received = 0
        while received < expected:
            message = json.loads(await ws.recv())
            if message.get("type") != "next":
                continue
            event = message["payload"]["data"]["liveVisits"]
            occurred = dt.datetime.fromisoformat(event["occurredAt"])
            latencies.append(time.time() - occurred.timestamp())
            received += 1
        counter[2] += 1
        if counter[2] == counter[1]:
            done.set()


async def run(args: argparse.Namespace, base: str, key: str) -> None:
    ws_url = base.replace("http://", "ws://") + "/graphql"
    latencies: list[float] = []
    ready, done = asyncio.Event(), asyncio.Event()
    counter = [0, args.subscribers, 0]
    tasks = [
        asyncio.create_task(subscriber(ws_url, key, args.hits, latencies, ready, counter, done))
        for _ in range(args.subscribers)
    ]
    await asyncio.wait_for(ready.wait(), 60)
    # Subscriptions start asynchronously after "subscribe": give the server a moment to register them.
    await asyncio.sleep(1.0)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, headers={"User-Agent": UA}) as browser:
        for i in range(args.hits):
            await browser.post("/mtc/event", data={"page_url": f"https://shop.example.com/p/{i}"})
            await asyncio.sleep(max(0.0, start + (i + 1) / args.rate - time.perf_counter()))
    ingest_seconds = time.perf_counter() - start
    try:
        await asyncio.wait_for(done.wait(), 120)
    except TimeoutError:
        print(f"only {counter[2]} of {args.subscribers} subscribers got every event")
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    delivered = len(latencies)
    ideal = args.subscribers * args.hits
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    print(
        f"{args.subscribers} subscribers, {args.hits} hits ingested in {ingest_seconds:.1f} s "
        f"({args.hits / ingest_seconds:.0f} hits/s)"
    )
    print(
        f"delivered {delivered} of {ideal} events ({delivered / ideal:.3f}) in {elapsed:.1f} s: "
        f"{delivered / elapsed:.0f} events/s"
    )
    print(
        f"ingest-to-delivery latency: p50 {pick(0.5):.1f} ms, p90 {pick(0.9):.1f} ms, p99 {pick(0.99):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--hits", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="hits per second to ingest")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cm-bench-live-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CM_")}
    env.update(
        {
            "CM_DATA_DIR": str(data_dir),
            "CM_COOKIE_SECURE": "false",
            "CM_SUBSCRIPTION_QUEUE": str(max(1000, args.hits * 2)),
        }
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "contact_monitor.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "contact_monitor.cli",
                "api-key",
                "create",
                "--name",
                "bench",
                "--role",
                "read",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        asyncio.run(run(args, base, created.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
