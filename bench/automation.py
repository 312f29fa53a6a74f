"""What rules and webhooks cost ingest: the same server and wrk mix, without and with them.

    python -m bench.automation [--duration 10] [--connections 50] [--rules 50] [--webhooks 2]

Starts `contact-monitor serve` on the embedded default (as `bench.ingest`), creates the device
pool and drives the tracked pixel with the `bench.ingest` wrk mix four times in one run: with
no rule and no webhook, twice with `--rules` rules and `--webhooks` webhooks, and without again
(deleted): the database grows during the run, so each kind of phase gets an early and a late
turn. The four phases end within a minute of the pool's creation (`--duration` at most 11 s):
a minute after it, the last_seen of every pooled device is rewritten at once, a burst of
ingest's own that would fall into one phase. One rule fires on ~1% of the hits (`PAGE_HIT` on
URLs whose counter ends in 00: +10 points, trigger `cart_seen`); with
`--mix heavy` two more fire for every new visitor (`UTM_RECORDED` with the benchmark's campaign,
+1 point and a trigger once per contact per hour; `PAGE_HIT` on its shop, a tag once per
contact); the others look at other pages, forms, custom activity and tags (evaluated on every
hit, firing never). The webhooks take `TRIGGER_FIRED` and `FORM_SUBMITTED` events (what an
integration that acts on triggers and forms subscribes to; `--webhook-types` changes it) to a local
HTTP receiver (an asyncio process answering 204, with keep-alive).

Prints one JSON line: req/s, p50, p99 and CPU microseconds per hit of the server and
SecantusDB for each phase, the ratio of the summed req/s with and without (the target: at least
0.9), the triggers fired, timeline entries written and deliveries made by the rules and
webhooks, and the consumer's lag at the end. Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench.ingest import command_of, cpu_seconds, descendants, run_wrk, start_profiler, write_mix
from bench.servers import create_key, start_service, wait_for
from contact_monitor.embedded import free_port
from contact_monitor.storage.devices import SEEN_RESOLUTION

# Four phases, installing and removing the rules and webhooks, and the waits between them.
MAX_DURATION = 11
CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
CREATE_WEBHOOK = "mutation($input: WebhookInput!) { createWebhook(input: $input) { id } }"


RECEIVER = """
import asyncio, sys

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\\r\\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            print(1, flush=False)
            writer.write(b"HTTP/1.1 204 No Content\\r\\ncontent-length: 0\\r\\n\\r\\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def start_receiver(port: int, log: Path) -> subprocess.Popen[bytes]:
    """A webhook receiver in a process of its own (asyncio, keep-alive, answers 204): one line
    of its output per request received."""
    return subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)], stdout=log.open("wb"))


def rules(count: int, mix: str) -> list[dict[str, Any]]:
    """`count` rules; in the light mix one fires (on ~1% of the benchmark's hits: URLs whose
    counter ends in 00), in the heavy mix two more fire on every new visitor."""
    matching: list[dict[str, Any]] = [
        {
            "name": "Cart seen",
            "on": "PAGE_HIT",
            "urlMatches": "https://shop.example.com/p/*00?*",
            "points": 10,
            "trigger": "cart_seen",
        }
    ]
    if mix == "none":  # evaluated on every event, firing never: the cost of evaluation alone
        matching = []
    if mix == "heavy":
        matching += [
            {
                "name": "Winter campaign",
                "on": "UTM_RECORDED",
                "utmCampaign": "winter",
                "points": 1,
                "trigger": "winter_seen",
                "frequency": "ONCE_PER_PERIOD",
                "periodSeconds": 3600,
            },
            {
                "name": "Shop visitor",
                "on": "PAGE_HIT",
                "urlMatches": "https://shop.example.com/p/*",
                "addTags": ["shopper"],
                "frequency": "ONCE",
            },
        ]
    others: list[dict[str, Any]] = []
    kinds = ("page", "form", "custom", "tag")
    n = 0
    while len(matching) + len(others) < count:
        kind = kinds[n % len(kinds)]
        if kind == "page":
            rule = {"on": "PAGE_HIT", "urlMatches": f"https://other{n}.example.com/*/checkout?", "points": 5}
        elif kind == "form":
            rule = {"on": "FORM_SUBMITTED", "formId": 1000 + n, "points": 20}
        elif kind == "custom":
            rule = {"on": "CUSTOM_ACTIVITY", "customType": f"forum_post_{n}", "points": 3}
        else:
            rule = {"on": "TAGS_CHANGED", "tag": f"vip{n}", "trigger": f"vip_{n}"}
        others.append({"name": f"other {n}", **rule})
        n += 1
    return (matching + others)[:count]


def phase(
    app_url: str, script: Path, args: argparse.Namespace, server: list[int], database: list[int]
) -> dict[str, Any]:
    cpu_server, cpu_db = cpu_seconds(server), cpu_seconds(database)
    result: dict[str, Any] = run_wrk(app_url + "/", script, args.duration, args.connections)
    answered = result["requests"] - result["non2xx"]
    result["server_cpu_us_per_hit"] = round((cpu_seconds(server) - cpu_server) / max(answered, 1) * 1e6)
    result["secantusdb_cpu_us_per_hit"] = round((cpu_seconds(database) - cpu_db) / max(answered, 1) * 1e6)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--webhooks", type=int, default=2)
    parser.add_argument(
        "--webhook-types",
        default="TRIGGER_FIRED,FORM_SUBMITTED",
        help="what the webhooks take (comma-separated ActivityType names)",
    )
    parser.add_argument(
        "--mix",
        choices=("none", "light", "heavy"),
        default="light",
        help="none: no rule fires; light: one fires on ~1%% of hits; heavy: also twice per new "
        "visitor (20%% of hits)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="py-spy the server (FILE.without, FILE.with) and SecantusDB (FILE.without.secantusdb, "
        "FILE.with.secantusdb) during the second phase of each kind",
    )
    args = parser.parse_args()
    if not 1 <= args.duration <= MAX_DURATION:
        parser.error(
            f"--duration must be 1-{MAX_DURATION} s: the four phases must end within a minute of "
            "the device pool's creation (each device's last_seen is rewritten once a minute, all "
            "of the pool's at once: a burst of updates that has nothing to do with rules would "
            "land in one phase)"
        )
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    data_dir = Path(tempfile.mkdtemp(prefix="cm-bench-"))
    receiver_port = free_port()
    receiver = start_receiver(receiver_port, data_dir / "received.log")
    port = free_port()
    # The receiver listens on 127.0.0.1.
    app = start_service(
        data_dir, port, "--log-level", "warning", settings={"CM_WEBHOOK_ALLOW_PRIVATE": "true"}
    )
    script = data_dir / "mix.lua"
    try:
        app_url = f"http://127.0.0.1:{port}"
        wait_for(app_url + "/health", app)
        key = create_key(data_dir, "admin")
        state = json.loads((data_dir / "embedded.json").read_text())
        pool_made = time.monotonic()
        write_mix(script, app_url, args.devices)
        processes = descendants(app.pid)
        database = [p for p in processes if "secantus" in command_of(p)]
        server = [p for p in processes if p not in database and "redis" not in command_of(p)]

        api = httpx.Client(base_url=app_url, headers={"Authorization": f"Bearer {key}"})

        def call(query: str, variables: dict[str, Any]) -> dict[str, Any]:
            body: dict[str, Any] = api.post("/graphql", json={"query": query, "variables": variables}).json()
            assert not body.get("errors"), body
            return body["data"]

        def install() -> tuple[list[str], list[str]]:
            rule_ids = [
                call(CREATE_RULE, {"input": r})["createRule"]["id"] for r in rules(args.rules, args.mix)
            ]
            hook_ids = [
                call(
                    CREATE_WEBHOOK,
                    {
                        "input": {
                            "url": f"http://127.0.0.1:{receiver_port}/hook/{n}",
                            "types": args.webhook_types.split(","),
                            "secret": "bench-secret-0123456789",
                        }
                    },
                )["createWebhook"]["id"]
                for n in range(args.webhooks)
            ]
            time.sleep(1.5)  # every process reads the rules again within a second
            return rule_ids, hook_ids

        def uninstall(rule_ids: list[str], hook_ids: list[str]) -> None:
            for rule_id in rule_ids:
                call("mutation($id: ID!) { deleteRule(id: $id) }", {"id": rule_id})
            for hook_id in hook_ids:
                call("mutation($id: ID!) { deleteWebhook(id: $id) }", {"id": hook_id})
            time.sleep(1.5)  # every process reads the rules again

        # Without, with, with, without: the database grows during the run, so each kind of
        # phase gets an early and a late turn (a linear drift cancels out); the ratio is over
        # the sums.
        runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}

        def profiled(kind: str) -> list[subprocess.Popen[bytes]]:
            if not args.profile:
                return []
            return [
                start_profiler(max(server), Path(f"{args.profile}.{kind}"), args.duration),
                start_profiler(max(database), Path(f"{args.profile}.{kind}.secantusdb"), args.duration),
            ]

        def measured(kind: str, profile: bool) -> None:
            profilers = profiled(kind) if profile else []
            runs[kind].append(phase(app_url, script, args, server, database))
            for profiler in profilers:
                profiler.wait(60)

        measured("without", False)
        installed = install()
        measured("with", False)
        measured("with", True)
        time.sleep(3)  # the consumer and the sender catch up
        with MongoClient(state["mongodb"]["uri"]) as mongo:
            deliveries = mongo.get_default_database("contact_monitor").webhook_deliveries
            queued = deliveries.count_documents({})
            delivered = deliveries.count_documents({"status": "delivered"})
        uninstall(*installed)
        measured("without", True)
        elapsed = time.monotonic() - pool_made
        if elapsed > SEEN_RESOLUTION.total_seconds():
            print(
                f"warning: the last phase ended {elapsed:.0f} s after the device pool was made: the "
                "pool's once-a-minute last_seen rewrites fell into a phase (use a shorter --duration)",
                file=sys.stderr,
            )
        api.close()
        without, with_rules = runs["without"], runs["with"]
        with MongoClient(state["mongodb"]["uri"]) as mongo:
            db = mongo.get_default_database("contact_monitor")
            fired = db.activities.count_documents(
                {"type": "trigger_fired", "data.rule_id": {"$exists": True}}
            )
            entries = db.activities.count_documents({"data.rule_id": {"$exists": True}})
        receiver.terminate()
        receiver.wait(10)
        receiver_requests = len((data_dir / "received.log").read_bytes().splitlines())
        metrics = httpx.get(app_url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
        lag = next(
            (
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith("cm_automation_lag_seconds ")
            ),
            None,
        )
        print(
            json.dumps(
                {
                    "benchmark": "automation",
                    "connections": args.connections,
                    "rules": args.rules,
                    "webhooks": args.webhooks,
                    "webhook_types": args.webhook_types,
                    "without": without,
                    "with": with_rules,
                    "ratio": round(sum(r["rps"] for r in with_rules) / sum(r["rps"] for r in without), 3),
                    "mix": args.mix,
                    "triggers_fired": fired,
                    "timeline_entries_by_rules": entries,
                    "deliveries_queued": queued,
                    "deliveries_delivered": delivered,
                    "receiver_requests": receiver_requests,
                    "consumer_lag_seconds": lag,
                    "seconds_from_pool_to_end": round(elapsed),
                }
            )
        )
    finally:
        app.terminate()
        app.wait(30)
        receiver.terminate()
        receiver.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
