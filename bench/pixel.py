"""Pixel benchmark on the embedded default: latency per request and throughput, as ratios to a
trivial GIF route measured in the same run.

    python bench/pixel.py [--requests 300] [--duration 10] [--connections 16]

Starts `contact-monitor serve` (embedded SecantusDB + Redis under a temporary data directory) and the
baseline app, each as its own uvicorn process, then:
1. latency: sequential requests from one client - a returning visitor (cookies kept), new visitors
   (no cookies: contact + device created each time) and the baseline;
2. throughput: wrk (if installed) with a returning visitor's cookies, and against the baseline.
Absolute numbers drift between runs and machines; compare the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import start_baseline, start_service, wait_for  # noqa: E402
from contact_monitor.embedded import free_port  # noqa: E402

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
PARAMS = {"page_url": "https://shop.example.com/product/7?utm_source=news", "page_title": "Product 7"}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50": pick(0.5) * 1000,
        "p90": pick(0.9) * 1000,
        "p99": pick(0.99) * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


def latency(base: str, requests: int, *, keep_cookies: bool) -> dict[str, float]:
    samples = []
    with httpx.Client(base_url=base, headers={"User-Agent": UA}) as client:
        client.get("/mtracking.gif", params=PARAMS)  # warm-up (and first visit)
        for _ in range(requests):
            if not keep_cookies:
                client.cookies.clear()
            start = time.perf_counter()
            response = client.get("/mtracking.gif", params=PARAMS)
            samples.append(time.perf_counter() - start)
            assert response.status_code == 200
    return percentiles(samples)


def wrk(url: str, duration: int, connections: int, cookie: str | None) -> float:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-H", f"User-Agent: {UA}"]
    if cookie:
        command += ["-H", f"Cookie: {cookie}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    for line in output.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"could not read wrk output:\n{output}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cm-bench-"))
    app_port, base_port = free_port(), free_port()
    app = start_service(data_dir, app_port, "--log-level", "warning")
    baseline = start_baseline(base_port, "--log-level", "warning")
    try:
        app_url, base_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{base_port}"
        wait_for(app_url + "/health", app)
        wait_for(base_url + "/mtracking.gif", baseline)

        print(f"latency, {args.requests} sequential requests (ms)")
        results = {
            "baseline GIF route": latency(base_url, args.requests, keep_cookies=True),
            "pixel, returning visitor": latency(app_url, args.requests, keep_cookies=True),
            "pixel, new visitor": latency(app_url, args.requests, keep_cookies=False),
        }
        base_p50 = results["baseline GIF route"]["p50"]
        for name, r in results.items():
            print(
                f"  {name:<26} p50 {r['p50']:6.2f}  p90 {r['p90']:6.2f}  p99 {r['p99']:6.2f}  "
                f"mean {r['mean']:6.2f}  ({r['p50'] / base_p50:5.1f}x baseline p50)"
            )

        if shutil.which("wrk"):
            first = httpx.get(app_url + "/mtracking.gif", params=PARAMS, headers={"User-Agent": UA})
            cookie = f"mautic_device_id={first.cookies['mautic_device_id']}; mtc_id={first.cookies['mtc_id']}"
            query = str(httpx.QueryParams(PARAMS))
            print(f"throughput, wrk -c{args.connections} for {args.duration}s (requests/s)")
            base_rps = wrk(f"{base_url}/mtracking.gif?{query}", args.duration, args.connections, None)
            pixel_rps = wrk(f"{app_url}/mtracking.gif?{query}", args.duration, args.connections, cookie)
            print(f"  baseline GIF route         {base_rps:8.0f}")
            print(f"  pixel, returning visitor   {pixel_rps:8.0f}  ({pixel_rps / base_rps:.3f} of baseline)")
        else:
            print("wrk not installed (apt-get install wrk): throughput skipped")
    finally:
        for process in (app, baseline):
            process.terminate()
            process.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
