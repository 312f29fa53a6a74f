"""The README's examples, run as a newcomer runs them: `contact-monitor serve` with nothing
configured and a fresh home directory, then every `sh` block from "Try it with curl" to the end
of "Endpoints" with the Python live-feed example after the queries, and the field commands of
"Contact fields", in order, in one shell (variables carry over, as in one terminal), verbatim but
for the port."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from contact_monitor.embedded import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def section_blocks(title: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start:end], re.S)


def live_feed_step(port: int) -> str:
    """The README's Python live-feed example, verbatim but for its address and the key (the
    `$KEY` the walkthrough made), following the feed while the next pixel arrives."""
    text = README.read_text()
    start = text.index("\n## Live feed (subscriptions)\n")
    example = next(
        b for b in re.findall(r"```python\n(.*?)```", text[start:], re.S) if "async def follow" in b
    )
    example = example.replace("wss://track.example.com/graphql", f"ws://127.0.0.1:{port}/graphql")
    example = example.replace(
        'asyncio.run(follow("cm_..."))', 'import os\nasyncio.run(follow(os.environ["KEY"]))'
    )
    return f"""
cat > follow.py <<'PYTHON'
{example}
PYTHON
KEY="$KEY" timeout 60 python -u follow.py > follow.out 2>&1 &
FOLLOWER=$!
for attempt in $(seq 1 150); do  # until the follower prints the hit (it subscribes first)
  curl -s -o /dev/null -A 'Mozilla/5.0 Firefox/128.0' "http://127.0.0.1:8000/mtracking.gif?page_url=https%3A%2F%2Fexample.com%2Flive-feed-check"
  grep -q live-feed-check follow.out && break
  sleep 0.2
done
kill $FOLLOWER
echo "live feed: $(grep -m1 live-feed-check follow.out || cat follow.out)"
"""


def test_the_curl_walkthrough_works_as_written(tmp_path):
    if not shutil.which("contact-monitor") or not shutil.which("curl"):
        pytest.fail("the walkthrough needs the installed `contact-monitor` command and curl")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CM_", "XDG_"))}
    env["HOME"] = str(tmp_path)  # the default data directory, as on a fresh machine
    server = subprocess.Popen(
        [sys.executable, "-m", "contact_monitor.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.communicate()[0].decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.2)
        blocks = [
            *section_blocks("Try it with curl"),
            *section_blocks("Query contacts (GraphQL)"),
            live_feed_step(port),
            *section_blocks("Endpoints"),
            *section_blocks("Contact fields"),
        ]
        script = "\n".join(blocks).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    finally:
        server.send_signal(signal.SIGINT)
        log = server.communicate(timeout=60)[0].decode()
    out = done.stdout
    assert "image/gif" in out and "mtc_id=" in out and "mautic_device_id=" in out  # the pixel
    assert "'url': 'https://example.com/pricing?utm_source=news'" in out and "page_hit" in out
    assert '"success":1,"id":"' in out  # /mtc/event
    assert '"totalCount":1' in out and '"email":"ann@example.com"' in out  # the GraphQL query
    assert '{"data":{"createForm":{"id":1}}}' in out
    assert '"formName":"newsletter"' in out  # the form post
    # The mobile flow's timeline: the screen, then the form, on the contact of the app's jar.
    assert re.search(
        r'"email":"myemail@somewhere.com","timeline":\{"edges":\[\{"node":\{"__typename":"PageHit","url":"cart_screen"\}\},'
        r'\{"node":\{"__typename":"FormSubmitted","formName":"Newsletter"',
        out,
    ), out[-3000:]
    assert re.search(r"member_no\b.*\bunique", out), out[-2000:]  # created, then made unique
    assert re.search(
        r"live feed: \S+ PAGE_HIT \{'id': '\w+', 'email': None\} \{'url': 'https://example.com/live-feed-check'\}",
        out,
    ), out
    data_dir = tmp_path / ".local" / "share" / "contact-monitor"
    assert f"data directory: {data_dir}" in log
