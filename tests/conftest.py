"""Shared fixtures: one SecantusDB daemon per session, the machine's Redis, a fresh database and
key prefix per test, and the real ASGI app driven through httpx."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from contact_monitor.app import create_app
from contact_monitor.core import fields as field_ops
from contact_monitor.core.services import Services
from contact_monitor.embedded import start_mongodb
from contact_monitor.settings import Settings
from ingest.pipeline import IngestPipeline
from subscriptions.hub import StreamHub
from tests.servers import SESSION_PREFIX, forget_prefix, redis_prefix

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
BASE_URL = "https://track.example.com"


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """CM_TEST_MONGODB_URI points the suite at a real mongod; otherwise one SecantusDB daemon."""
    configured = os.environ.get("CM_TEST_MONGODB_URI")
    if configured:
        yield configured
        return
    server = start_mongodb(tmp_path_factory.mktemp("secantus"), storage=":memory:")
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("CM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    yield url
    # Every fixture removes the keys of its prefix: anything left is a leak to fix.
    left = forget_prefix(url, SESSION_PREFIX)
    assert left == 0, f"the suite left {left} Redis keys under {SESSION_PREFIX}"


@pytest.fixture
def settings(mongodb_uri: str, redis_url: str, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:12]
    return Settings(
        mongodb_uri=mongodb_uri,
        mongodb_db=f"cmtest_{tag}",
        redis_url=redis_url,
        redis_prefix=redis_prefix(tag),
        data_dir=tmp_path,
        cors_origins=("https://shop.example.com", "https://*.example.org"),
        field_cache_seconds=0,
    )


@dataclass
class Harness:
    """The running app plus direct access to what it stored."""

    app: Any
    client: httpx.AsyncClient
    settings: Settings
    services: Services
    hub: StreamHub
    pipeline: IngestPipeline
    db: AsyncDatabase[dict[str, Any]]
    redis: Redis

    async def stream(self) -> list[dict[str, Any]]:
        entries = await self.redis.xrange(self.settings.stream_key)
        return [json.loads(fields[b"event"]) for _, fields in entries]

    async def field(
        self, alias: str, *, public: bool = True, unique: bool | None = None, **create: Any
    ) -> None:
        """Make a field publicly updatable (creating it when `create` options are given)."""
        storage = self.services.storage
        if create:
            await field_ops.create_field(
                storage, alias, publicly_updatable=public, unique=bool(unique), **create
            )
        else:
            await field_ops.update_field(storage, alias, publicly_updatable=public, unique=unique)

    async def pixel(self, client: httpx.AsyncClient | None = None, **params: str) -> httpx.Response:
        response = await (client or self.client).get("/mtracking.gif", params=params)
        assert response.status_code == 200
        return response

    async def event(self, client: httpx.AsyncClient | None = None, **params: str) -> dict[str, Any]:
        response = await (client or self.client).post("/mtc/event", data=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def raw(
        self,
        method: str,
        path: str,
        query: bytes = b"",
        headers: tuple[tuple[bytes, bytes], ...] = (),
        body: bytes = b"",
        peer: str = "203.0.113.10",
    ) -> tuple[int, dict[str, str], bytes]:
        """Call the ASGI app with bytes no HTTP client would send (huge URLs, non-ASCII cookies)."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "client": (peer, 50000),
            "server": ("track.example.com", 443),
            "headers": [
                *(
                    (name, value)
                    for name, value in ((b"host", b"track.example.com"), (b"user-agent", CHROME.encode()))
                    if name not in {n for n, _ in headers}
                ),
                *headers,
            ],
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = sent[0]
        response_headers = {k.decode(): v.decode("latin-1") for k, v in start["headers"]}
        return start["status"], response_headers, b"".join(m.get("body", b"") for m in sent[1:])

    def browser(self, user_agent: str = CHROME, ip: str = "203.0.113.10") -> httpx.AsyncClient:
        """Another browser (own cookie jar) on the same app; close it with `async with`."""
        transport = httpx.ASGITransport(app=self.app, client=(ip, 50000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers={"User-Agent": user_agent})


@contextlib.asynccontextmanager
async def running(settings: Settings, *, ip: str = "203.0.113.10") -> AsyncIterator[Harness]:
    app = create_app(settings)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    redis = Redis.from_url(settings.redis_url or "")
    try:
        # The first start of a session warms the user-agent parser up (seconds on a busy machine).
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app, client=(ip, 50000))
            async with httpx.AsyncClient(
                transport=transport, base_url=BASE_URL, headers={"User-Agent": CHROME}
            ) as client:
                services: Services = manager._state["services"]
                hub: StreamHub = manager._state["hub"]
                pipeline: IngestPipeline = manager._state["pipeline"]
                yield Harness(
                    manager.app, client, settings, services, hub, pipeline, mongo[settings.mongodb_db], redis
                )
    finally:
        # After the app stopped: its background tasks (the stream consumer) write no more.
        await mongo.drop_database(settings.mongodb_db)
        keys = [key async for key in redis.scan_iter(match=settings.redis_prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await mongo.close()
        await redis.aclose()


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    async with running(settings) as h:
        yield h


@pytest.fixture
def make_harness(settings: Settings) -> Any:
    """`async with make_harness(anonymize_ip="truncate") as h:` for tests needing other settings."""

    def make(ip: str = "203.0.113.10", **overrides: Any) -> contextlib.AbstractAsyncContextManager[Harness]:
        return running(replace(settings, **overrides), ip=ip)

    return make
