"""The dashboard in Debian's Chromium (Playwright, never `playwright install`) against a real
`contact-monitor serve` with its own database and Redis prefix, and a "customer site" on
another port whose pages embed the README's snippet.

Screenshots: with CM_SCREENSHOTS=<dir> the tests save the README's pictures there
(`CM_SCREENSHOTS=docs/images python -m pytest tests/dashboard`); otherwise in pytest's tmp dir.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from contact_monitor.embedded import free_port
from tests.mtc_js.conftest import LOADER, Site, _serve_site, chromium  # noqa: F401 (fixture)
from tests.servers import Store, create_key, forget_prefix, redis_prefix, start_server, stop_server


@dataclass
class Dashboard:
    url: str
    db: Database[dict[str, Any]]
    read_key: str
    write_key: str
    site: Site
    shots: Path
    redis_url: str
    prefix: str

    def loader(self, calls: str = "mt('send', 'pageview');") -> str:
        return LOADER.format(tracker=self.url, calls=calls)

    def shot(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.shots / name))


@pytest.fixture(scope="module")
def dashboard_server(
    mongodb_uri: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    site = Site(free_port())
    served = _serve_site(site)
    port = free_port()
    store = Store.new(mongodb_uri, redis_url, "dashboard")
    env = store.env(
        CM_DATA_DIR=str(tmp_path_factory.mktemp("dashboard")),
        CM_CORS_ORIGINS=f"http://localhost:{site.port}",
        CM_COOKIE_SECURE="false",
        CM_GRAPHIQL="true",
    )
    process = start_server(env, port)
    shots = Path(os.environ.get("CM_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, tz_aware=True)
    try:
        yield Dashboard(
            f"http://localhost:{port}",
            client[store.database],
            create_key(env, "viewer", "read"),
            create_key(env, "editor", "write"),
            site,
            shots,
            redis_url,
            redis_prefix(store.database),
        )
    finally:
        stop_server(process)
        client.close()
        store.drop()
        served.shutdown()
        served.server_close()


@pytest.fixture
def dashboard(dashboard_server: Dashboard) -> Dashboard:
    db = dashboard_server.db
    for name in ("contacts", "devices", "hits", "utm_records", "tags", "merges", "activities"):
        db[name].delete_many({})
    # What the tracking endpoints counted (Check your site): none of the previous test's (but
    # what the server counted in its last second may still arrive: tests use their own sites).
    for pattern in ("sites", "site:", "hits:"):
        forget_prefix(dashboard_server.redis_url, dashboard_server.prefix + pattern)
    return dashboard_server
