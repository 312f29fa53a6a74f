"""The pages the service serves itself (api/web.py: the dashboard at /, the vendored GraphiQL)
and the queries behind the dashboard (api/schema/traffic.py, contact_monitor/core/traffic.py),
over HTTP against the real app, Redis and SecantusDB. The dashboard in Chromium:
tests/dashboard/."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError

from api.web import STATIC
from contact_monitor.core.traffic import MAX_SITES, OTHER, UNKNOWN, TrafficLog, site_of
from tests.api.conftest import Api
from tests.conftest import Harness

BOT = "python-requests/2.31"
SITES = """{ sites(first: 10) { origin recorded outcomes { outcome count lastUrl lastAt } } }"""


async def test_the_dashboard_is_served_at_the_root_from_the_package_alone(harness: Harness) -> None:
    page = await harness.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert 'label for="api-key">API key<' in page.text
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert asset.startswith("/dashboard/") or asset.startswith("#"), asset
        if asset.startswith("/dashboard/"):
            assert (await harness.client.get(asset)).status_code == 200, asset
    # Nothing is fetched from elsewhere (the SVG namespace is a name, not a download).
    for name in ("app.js", "style.css"):
        text = (STATIC / "dashboard" / name).read_text()
        assert (await harness.client.get(f"/dashboard/{name}")).headers["x-content-type-options"] == "nosniff"
        assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)|url\(|@import", text), name
    assert (await harness.client.get("/dashboard/../web.py")).status_code == 404
    # The page exists only at / (with its policy), not as a file among its assets.
    assert (await harness.client.get("/dashboard/index.html")).status_code == 404
    assert (await harness.client.get("/dashboard/")).status_code == 404
    # Without its script, the sign-in form cannot put the key in a URL.
    assert 'method="post"' in page.text and 'name="api-key"' not in page.text


async def test_graphiql_is_off_by_default_and_its_files_are_not_served(harness: Harness) -> None:
    page = await harness.client.get("/graphql", headers={"Accept": "text/html"})
    assert "GraphiQL" not in page.text
    assert (await harness.client.get("/graphiql-assets/graphiql.min.js")).status_code == 404


async def test_graphiql_is_served_from_vendored_files_matching_their_published_hashes(
    make_harness: Any,
) -> None:
    async with make_harness(graphiql=True) as harness:
        page = await harness.client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "API key" in page.text
        assert "unpkg" not in page.text and "cdn" not in page.text.lower()
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert "/graphiql-assets/graphiql.min.js" in assets
        for asset in assets:
            assert asset.startswith("/graphiql-assets/") or asset.startswith("/dashboard/"), asset
            assert (await harness.client.get(asset)).status_code == 200, asset
        assert (await harness.client.get("/graphiql-assets/index.html")).status_code == 404
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
    readme = (STATIC / "graphiql" / "README.md").read_text()
    table = dict(re.findall(r"^\| ([\w.-]+\.(?:js|css)) \| [^|]+ \| ([A-Za-z0-9+/=]+) \|$", readme, re.M))
    assert len(table) == 4
    for name, expected in table.items():
        digest = base64.b64encode(hashlib.sha384((STATIC / "graphiql" / name).read_bytes()).digest())
        assert digest.decode() == expected, name
    for licence in ("LICENSE.react", "LICENSE.react-dom", "LICENSE.graphiql"):
        assert "MIT License" in (STATIC / "graphiql" / licence).read_text()


async def test_viewer_names_the_key_and_its_role(harness: Harness) -> None:
    api = Api(harness)
    for role in ("read", "write", "admin"):
        data = await api("{ viewer { name role } }", role=role)
        assert data["viewer"]["role"] == role and data["viewer"]["name"]
    refused = await api.raw("{ viewer { role } }", role=None)
    assert refused.status_code == 401


async def test_sites_say_what_was_recorded_and_what_was_not_and_why(harness: Harness) -> None:
    api = Api(harness)
    await harness.pixel(page_url="https://shop.example.com/a", page_title="A")
    await harness.pixel(page_url="https://shop.example.com/b")
    async with harness.browser(user_agent=BOT) as bot:
        await harness.pixel(bot, page_url="https://shop.example.com/robots")
    # mtc.js on a site whose origin is not allowed: recorded, but the page cannot read the answer.
    foreign = await harness.client.post(
        "/mtc/event",
        data={"page_url": "https://other.example.net/x"},
        headers={"Origin": "https://other.example.net"},
    )
    assert foreign.status_code == 200 and "access-control-allow-origin" not in foreign.headers
    await harness.client.get("/mtracking.gif", params={"page_url": "home_screen"})  # an app: no origin
    # mtc.js on a site not allowed: the browser's preflight is refused (then the image records it).
    preflight = await harness.client.options(
        "/mtc/event",
        headers={"Origin": "https://refused.example.net", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204 and "access-control-allow-origin" not in preflight.headers
    await harness.services.traffic.flush()

    sites = {site["origin"]: site for site in (await api(SITES))["sites"]}
    assert set(sites) == {
        "https://shop.example.com",
        "https://other.example.net",
        "https://refused.example.net",
        UNKNOWN,
    }
    assert sites["https://refused.example.net"]["outcomes"][0]["outcome"] == "cors"
    shop = {o["outcome"]: o for o in sites["https://shop.example.com"]["outcomes"]}
    assert sites["https://shop.example.com"]["recorded"] == 2
    assert shop["bot user agent"]["count"] == 1
    assert shop["bot user agent"]["lastUrl"] == "https://shop.example.com/robots"
    other = {o["outcome"]: o["count"] for o in sites["https://other.example.net"]["outcomes"]}
    assert other == {"recorded": 1, "cors": 1}

    minutes = (await api("{ hitsPerMinute(minutes: 5) { minute hits } }"))["hitsPerMinute"]
    assert len(minutes) == 5 and sum(m["hits"] for m in minutes) == 4  # the bot's is not recorded
    assert minutes[-1]["hits"] >= 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("{ sites(first: 0) { origin } }", f"first must be between 1 and {MAX_SITES}"),
        (f"{{ sites(first: {MAX_SITES + 1}) {{ origin }} }}", f"first must be between 1 and {MAX_SITES}"),
        ("{ hitsPerMinute(minutes: 0) { hits } }", "minutes must be between 1 and 120"),
        ("{ hitsPerMinute(minutes: 121) { hits } }", "minutes must be between 1 and 120"),
    ],
)
async def test_dashboard_queries_refuse_what_is_out_of_bounds(
    harness: Harness, query: str, message: str
) -> None:
    body = (await Api(harness).raw(query)).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in body["errors"][0]["message"]


async def test_traffic_counts_are_bounded_per_flush_and_in_redis(harness: Harness) -> None:
    """At most MAX_SITES origins a second per process (the last one for all the others), at most
    MAX_SITES kept in Redis, the newest; URLs and origins cut to their limits."""
    traffic = TrafficLog(harness.redis, harness.settings.redis_prefix)
    for n in range(MAX_SITES + 5):
        traffic.note(f"https://site{n}.example.com", "recorded", "https://x/" + "y" * 2000)
    await traffic.flush()
    found = {origin: fields for origin, _, fields in await traffic.sites(MAX_SITES)}
    assert len(found) == MAX_SITES and found[OTHER]["recorded"] == "6"
    assert all(len(fields["url:recorded"]) == 500 for fields in found.values())
    for n in range(3):  # more sites: the oldest leave the index, and their counts with them
        traffic.note(f"https://newer{n}.example.com", "recorded", None)
        await traffic.flush()
    prefix = harness.settings.redis_prefix
    assert await harness.redis.zcard(f"{prefix}sites") == MAX_SITES
    assert len([key async for key in harness.redis.scan_iter(f"{prefix}site:*")]) == MAX_SITES
    assert (await traffic.sites(1))[0][0] == "https://newer2.example.com"
    # A site not heard from for a week is forgotten at the next flush.
    await harness.redis.zadd(f"{prefix}sites", {"https://newer0.example.com": 1})
    await harness.redis.zadd(f"{prefix}sites", {"https://newer1.example.com": 1})
    traffic.note("https://newer1.example.com", "recorded", None)  # heard again: stays
    await traffic.flush()
    assert await harness.redis.hgetall(f"{prefix}site:https://newer0.example.com") == {}
    assert "https://newer1.example.com" in {o for o, _, _ in await traffic.sites(MAX_SITES)}


async def test_a_made_up_port_or_origin_costs_the_visitor_nothing(harness: Harness) -> None:
    """Ports that are not ports, in any of the places a site is read from: the hit is recorded
    and counted under the site that can be read (or none)."""
    event = await harness.client.post(
        "/mtc/event",
        data={"page_url": "http://a:abc/x"},
        headers={"Origin": "http://b:99999", "Referer": "http://c:-1/"},
    )
    assert event.status_code == 200 and event.json()["id"]
    await harness.pixel(page_url="https://shop.example.com:0x50/y")
    assert await harness.db.hits.count_documents({}) == 2
    await harness.services.traffic.flush()
    sites = {site["origin"]: site["recorded"] for site in (await Api(harness)(SITES))["sites"]}
    assert sites == {UNKNOWN: 2}


def test_the_site_of_a_request() -> None:
    assert site_of("https://www.example.com", "https://other.example/x", None) == "https://www.example.com"
    assert site_of(None, "https://www.example.com:8443/p?q=1", None) == "https://www.example.com:8443"
    assert site_of(None, "cart_screen", "https://app.example/") == "https://app.example"
    assert site_of("null", "javascript:alert(1)", "not a url") == UNKNOWN
    assert site_of("http://a:abc", "https://b:99999/", "http://ok.example:8080/") == "http://ok.example:8080"
    assert len(site_of("https://" + "a" * 300 + ".example", None, None)) == 200


def test_the_static_files_are_package_data() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'api = ["static/*/*"]' in pyproject


async def test_traffic_counts_are_dropped_not_queued_while_redis_is_down(harness: Harness) -> None:
    """A flush that Redis refuses loses that second's counts (docs/dashboard.md) and holds
    nothing back: memory stays bounded, and the next flush to a Redis that answers works."""
    from contact_monitor.storage.redis_client import Redis

    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    traffic = TrafficLog(down, harness.settings.redis_prefix)
    traffic.note("https://shop.example.com", "recorded", "https://shop.example.com/a")
    with pytest.raises(RedisError):
        await traffic.flush()
    assert traffic._sites == {} and traffic._minutes == {}
    await down.aclose()
    traffic.redis = harness.redis
    traffic.note("https://shop.example.com", "recorded", "https://shop.example.com/b")
    await traffic.flush()
    [(origin, _, fields)] = await traffic.sites(10)
    assert origin == "https://shop.example.com" and fields["recorded"] == "1"
