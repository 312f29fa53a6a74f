"""The tracked pixel against the framework's ceiling, under the same load mix.

    python -m bench.ingest [--duration 10] [--connections 50] [--workers 1] [--devices 200]
    python -m bench.ingest --compare DIR [--rounds 3]    # another checkout against this one

Starts `contact-monitor serve` on the embedded default (SecantusDB daemon + Redis under a
temporary data directory) and a trivial Starlette route answering the same GIF
(`bench/baseline_app.py`), both under uvicorn with the same settings. Then wrk drives both with
one Lua mix: 80% returning visitors (a `mautic_device_id` cookie from a pool of devices created
first), 20% new visitors, every request with a page URL carrying UTM codes and a title.

Prints one JSON line: req/s, p50 and p99 of each, their ratio, the 200 responses against the hits
found in MongoDB and the page_hit events on the stream (lost = answered but not stored), and the
CPU microseconds per hit of the server process(es) and of SecantusDB (from /proc), and the
trivial route's CPU microseconds per request with the server's cost in units of it
(`server_cpu_over_trivial`). Run by hand, never in CI; absolute numbers drift between runs and
machines (this one's by up to 1.7x from one hour to the next), the ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient
from redis import Redis

from bench.servers import ROOT, start_baseline, start_service, wait_for
from contact_monitor.embedded import free_port

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
TICKS = os.sysconf("SC_CLK_TCK")

LUA = """
local devices = {%(devices)s}
local counter = 0
request = function()
  counter = counter + 1
  local path = "/mtracking.gif?page_url=https%%3A%%2F%%2Fshop.example.com%%2Fp%%2F" .. counter
    .. "%%3Futm_source%%3Dnews%%26utm_medium%%3Demail%%26utm_campaign%%3Dwinter"
    .. "&page_title=Product%%20" .. counter
  local headers = {["User-Agent"] = "%(ua)s"}
  if math.random() < 0.8 then
    headers["Cookie"] = "mautic_device_id=" .. devices[math.random(#devices)]
  end
  return wrk.format("GET", path, headers)
end
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "errors": %%d, ' ..
    '"p50_us": %%d, "p99_us": %%d}\\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def write_mix(script: Path, app_url: str, devices: int) -> None:
    """The wrk Lua mix, with a pool of `devices` created first (one new visitor each)."""
    created = []
    with httpx.Client(base_url=app_url, headers={"User-Agent": UA}) as client:
        for i in range(devices):
            client.cookies.clear()
            response = client.get("/mtracking.gif", params={"page_url": f"https://shop.example.com/{i}"})
            created.append(response.cookies["mautic_device_id"])
    script.write_text(LUA % {"devices": ", ".join(f'"{d}"' for d in created), "ua": UA})


def descendants(pid: int) -> list[int]:
    """pid and every process below it (uvicorn workers, the embedded servers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def run_wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    return {
        "rps": round(result["requests"] / (result["duration_us"] / 1e6), 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
        "requests": result["requests"],
        "non2xx": result["non2xx"],
        "socket_errors": result["errors"],
    }


def start_profiler(pid: int, output: Path, duration: int) -> subprocess.Popen[bytes]:
    """py-spy on one process (for the server: the youngest, the uvicorn worker that answers)."""
    if not shutil.which("py-spy"):
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    command = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
    command += ["--duration", str(duration), "--output", str(output), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_once(args: argparse.Namespace, root: Path = ROOT) -> dict[str, Any]:
    """One benchmark of the code in `root` (this checkout by default): the JSON line's fields."""
    data_dir = Path(tempfile.mkdtemp(prefix="cm-bench-"))
    app_port, base_port = free_port(), free_port()
    uvicorn_settings = ["--workers", str(args.workers), "--log-level", "warning"]
    app = start_service(data_dir, app_port, *uvicorn_settings, root=root)
    baseline = start_baseline(base_port, *uvicorn_settings)
    script = data_dir / "mix.lua"
    try:
        app_url, base_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{base_port}"
        wait_for(app_url + "/health", app)
        wait_for(base_url + "/mtracking.gif", baseline)
        state = json.loads((data_dir / "embedded.json").read_text())
        mongo_uri, redis_uri = state["mongodb"]["uri"], state["redis"]["uri"]

        write_mix(script, app_url, args.devices)

        with MongoClient(mongo_uri) as mongo:
            hits_before = mongo.get_default_database("contact_monitor").hits.count_documents({})
        redis = Redis.from_url(redis_uri)
        events_before = sum(1 for _, f in redis.xrange("cm:activity") if b'"type":"page_hit"' in f[b"event"])

        baseline_processes = descendants(baseline.pid)
        cpu_trivial = cpu_seconds(baseline_processes)
        trivial = run_wrk(base_url + "/", script, args.duration, args.connections)
        cpu_trivial = cpu_seconds(baseline_processes) - cpu_trivial
        processes = descendants(app.pid)
        database = [p for p in processes if "secantus" in command_of(p)]
        server = [p for p in processes if p not in database and "redis" not in command_of(p)]
        cpu_server, cpu_db = cpu_seconds(server), cpu_seconds(database)
        profilers = (
            [
                start_profiler(max(server), args.profile, args.duration),
                start_profiler(max(database), Path(f"{args.profile}.secantusdb"), args.duration),
            ]
            if args.profile
            else []
        )
        tracked = run_wrk(app_url + "/", script, args.duration, args.connections)
        for profiler in profilers:
            profiler.wait(60)
        cpu_server, cpu_db = cpu_seconds(server) - cpu_server, cpu_seconds(database) - cpu_db
        time.sleep(2)  # anything written behind the answer lands

        with MongoClient(mongo_uri) as mongo:
            stored = mongo.get_default_database("contact_monitor").hits.count_documents({}) - hits_before
        events = sum(1 for _, f in redis.xrange("cm:activity") if b'"type":"page_hit"' in f[b"event"])
        answered = tracked["requests"] - tracked["non2xx"]
        server_us = cpu_server / max(answered, 1) * 1e6
        trivial_us = cpu_trivial / max(trivial["requests"], 1) * 1e6
        return {
            "benchmark": "ingest",
            "workers": args.workers,
            "connections": args.connections,
            "trivial": trivial,
            "tracked": tracked,
            "ratio": round(tracked["rps"] / trivial["rps"], 4),
            "answered_200": answered,
            "hits_stored": stored,
            "page_hit_events": events - events_before,
            # Requests in flight when wrk stops are answered and stored but not counted by
            # wrk: up to `connections` more stored than answered is not a loss.
            "lost_hits": max(0, answered - stored),
            "lost_events": max(0, answered - (events - events_before)),
            "server_cpu_us_per_hit": round(server_us),
            "secantusdb_cpu_us_per_hit": round(cpu_db / max(answered, 1) * 1e6),
            # The trivial route's own cost per request, measured in the same minute: the
            # server's cost in units of it drifts far less than microseconds do.
            "trivial_cpu_us_per_request": round(trivial_us, 1),
            "server_cpu_over_trivial": round(server_us / trivial_us, 2) if trivial_us else None,
        }
    finally:
        for process in (app, baseline):
            process.terminate()
            process.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


COMPARED = (
    "ratio",
    "server_cpu_us_per_hit",
    "secantusdb_cpu_us_per_hit",
    "server_cpu_over_trivial",
    "lost_hits",
    "lost_events",
)


def summary(run: dict[str, Any]) -> dict[str, Any]:
    tracked = run["tracked"]
    return {"rps": tracked["rps"], "p50_ms": tracked["p50_ms"], "p99_ms": tracked["p99_ms"]} | {
        key: run[key] for key in COMPARED
    }


def median_of(values: Iterable[float | None]) -> float | None:
    """The median of the values measured (a quotient is None when its divisor was 0)."""
    measured = [value for value in values if value is not None]
    return statistics.median(measured) if measured else None


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Runs of another checkout (`--compare DIR`, "before") and of this one ("after"),
    alternating (ABBA), so that both meet the same moments of a machine whose speed drifts;
    medians of each and their quotients (after / before)."""
    other = args.compare.resolve()
    if not (other / "contact_monitor" / "cli.py").is_file():
        raise SystemExit(f"--compare: {other} is not a contact-monitor checkout")
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    roots = {"before": other, "after": ROOT}
    for round_number in range(args.rounds):
        # ABBA: each side runs first as often as second (no order can favour either).
        for side in ("before", "after") if round_number % 2 == 0 else ("after", "before"):
            runs[side].append(summary(run_once(args, roots[side])))
    medians = {
        side: {key: median_of(run[key] for run in done) for key in done[0]} for side, done in runs.items()
    }
    keys = ("rps", "p99_ms", *COMPARED[:4])
    return {
        "benchmark": "ingest-compare",
        "before": str(other),
        "rounds": args.rounds,
        "runs": runs,
        "median": medians,
        "after_over_before": {
            key: round(after / before, 3) if before and after is not None else None
            for key in keys
            for before, after in [(medians["before"][key], medians["after"][key])]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="record the server process with py-spy during the tracked run (raw collapsed stacks "
        "to FILE, SecantusDB's to FILE.secantusdb; the run is slowed by the sampling, so its "
        "numbers are not the benchmark's)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="alternate runs of the checkout in DIR (e.g. `git worktree add /tmp/before HEAD~3`) "
        "and of this one, --rounds times each, and print medians and their quotients: on a "
        "machine whose speed drifts, single runs of two versions compare nothing",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side with --compare (1-20)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    if args.compare is not None:
        if not 1 <= args.rounds <= 20:
            raise SystemExit("--rounds must be between 1 and 20")
        if args.profile:
            raise SystemExit("--profile and --compare do not go together (profiling slows the runs)")
        print(json.dumps(compare(args)))
        return
    print(json.dumps(run_once(args)))


if __name__ == "__main__":
    main()
