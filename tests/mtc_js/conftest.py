"""Browser fixtures: the tracker as a real server process, "customer sites" on other ports, and
Debian's Chromium driven by Playwright (never `playwright install`: there is no download here).

Sites: `site` is served as http://localhost:<A> (same site as the tracker on localhost:<T>: its
cookies flow) and as http://127.0.0.1:<A> (another site: the tracker's cookies are third-party and
blocked, as in browsers that block them); both origins are allowed by CORS. `foreign` on
http://127.0.0.1:<B> is not allowed.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from contact_monitor.embedded import free_port
from tests.servers import (
    Store,
    create_key,
    start_server,
    stop_server,
)

CHROMIUM = os.environ.get("CM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOADER = """<script>
    (function(w,d,t,u,n,a,m){{w['MauticTrackingObject']=n;
        w[n]=w[n]||function(){{(w[n].q=w[n].q||[]).push(arguments)}},a=d.createElement(t),
        m=d.getElementsByTagName(t)[0];a.async=1;a.src=u;m.parentNode.insertBefore(a,m)
    }})(window,document,'script','{tracker}/mtc.js','mt');

    {calls}
</script>"""


@dataclass
class Site:
    """A static "customer site": tests put pages into `pages` and open `url(path)`."""

    port: int
    pages: dict[str, str] = field(default_factory=dict)

    def url(self, path: str, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}{path}"


def _serve_site(site: Site) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = site.pages.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", site.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    served = Site(free_port())
    server = _serve_site(served)
    yield served
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def foreign() -> Iterator[Site]:
    served = Site(free_port())
    server = _serve_site(served)
    yield served
    server.shutdown()
    server.server_close()


@dataclass
class Tracker:
    url: str
    db: Database[dict[str, Any]]
    read_key: str = ""

    def loader(self, calls: str = "mt('send', 'pageview');") -> str:
        return LOADER.format(tracker=self.url, calls=calls)

    def make_public(self, *aliases: str) -> None:
        self.db.fields.update_many({"_id": {"$in": list(aliases)}}, {"$set": {"publicly_updatable": True}})


@pytest.fixture(scope="session")
def tracker_server(
    mongodb_uri: str, redis_url: str, site: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tracker]:
    port = free_port()
    store = Store.new(mongodb_uri, redis_url, "browser")
    env = store.env(
        CM_DATA_DIR=str(tmp_path_factory.mktemp("tracker")),
        CM_CORS_ORIGINS=f"http://localhost:{site.port},http://127.0.0.1:{site.port}",
        CM_COOKIE_SECURE="false",
        CM_FIELD_CACHE_SECONDS="0",
        CM_DASHBOARD_ORIGINS=f"http://localhost:{site.port}",
    )
    process = start_server(env, port)
    url = f"http://localhost:{port}"
    read_key = create_key(env, "dashboard", "read")
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, tz_aware=True)
    yield Tracker(url, client[store.database], read_key)
    stop_server(process)
    client.close()
    store.drop()


@pytest.fixture
def tracker(tracker_server: Tracker) -> Tracker:
    """The session's tracker with no data left by the previous test."""
    db = tracker_server.db
    for name in ("contacts", "devices", "hits", "utm_records", "tags", "merges", "audit", "activities"):
        db[name].delete_many({})
    db.fields.update_many({}, {"$set": {"publicly_updatable": False}})
    return tracker_server


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Module-scoped: the sync Playwright API keeps an event loop marked running while it is open,
    which async tests of other modules must not see."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (or set CM_TEST_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    """A fresh browser profile (its own cookies and storage)."""
    ctx = chromium.new_context()
    yield ctx
    ctx.close()
