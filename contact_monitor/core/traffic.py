"""What the tracking endpoints received, per site and per minute, for the dashboard's "Check your
site" and its hits-per-minute chart (docs/dashboard.md).

Each process counts in memory (a dict update per request) and adds its counts to Redis once a
second, in one pipeline:

    <prefix>sites                   sorted set: site origin -> when it was last heard from (ms);
                                    the newest MAX_SITES heard from within a week, no others
    <prefix>site:<origin>           hash: <outcome> -> count; last:<outcome> -> ms;
                                    url:<outcome> -> the last page URL with that outcome
    <prefix>hits:<hour>             hash: minute (epoch seconds) -> hits recorded that minute

An outcome is `recorded` or the reason a request was not recorded (`bot user agent`, ...), and
`cors`: a browser request whose `Origin` is not in CM_CORS_ORIGINS (recorded, but the page's
script cannot read the answer). Counts are a guide for operators, not an audit: a process that
dies loses its last second, and a Redis outage the counts of its duration (they are dropped,
never queued without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RECORDED = "recorded"
CORS = "cors"
MAX_SITES = 200  # origins kept in Redis (the most recently heard from), and per process per flush
MAX_ORIGIN = 200  # characters of an origin kept
MAX_URL = 500  # characters of a page URL kept
SITE_TTL_SECONDS = 7 * 24 * 3600
HOUR_TTL_SECONDS = 2 * 3600 + 120  # the chart shows the last hour
FLUSH_SECONDS = 1.0
OTHER = "(other sites)"  # past MAX_SITES origins in one second
UNKNOWN = "(no origin)"  # neither Origin, page URL nor Referer name one


def site_of(origin: str | None, page_url: str | None, referer: str | None) -> str:
    """The site a request came from: its `Origin` header, else the origin of the page URL it
    names, else of its Referer. Only http(s) origins count (an app's screen name has none)."""
    for candidate in (origin, page_url, referer):
        if not candidate:
            continue
        try:
            parts = urlsplit(candidate.strip())
            port = f":{parts.port}" if parts.port else ""  # ValueError: not a port
        except ValueError:
            continue
        if parts.scheme in ("http", "https") and parts.hostname:
            return f"{parts.scheme}://{parts.hostname}{port}"[:MAX_ORIGIN]
    return UNKNOWN


@dataclass
class SiteCounts:
    counts: dict[str, int] = field(default_factory=dict)
    last: dict[str, tuple[int, str]] = field(default_factory=dict)  # outcome -> (ms, page URL)


class TrafficLog:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._sites: dict[str, SiteCounts] = {}
        self._minutes: dict[int, int] = {}  # minute (epoch s) -> hits recorded
        self.flushed = asyncio.Event()  # set after each flush (tests wait on it)

    def note(self, site: str, outcome: str, page_url: str | None, *, cors_refused: bool = False) -> None:
        """One tracking request (called on the request path: memory only)."""
        now = time.time()
        if site not in self._sites and len(self._sites) >= MAX_SITES - 1:
            site = OTHER  # with it, at most MAX_SITES a flush
        counts = self._sites.setdefault(site, SiteCounts())
        url = (page_url or "")[:MAX_URL]
        for name in (outcome, CORS) if cors_refused else (outcome,):
            counts.counts[name] = counts.counts.get(name, 0) + 1
            counts.last[name] = (int(now * 1000), url)
        if outcome == RECORDED:
            minute = int(now // 60 * 60)
            self._minutes[minute] = self._minutes.get(minute, 0) + 1

    async def flush(self) -> None:
        sites, self._sites = self._sites, {}
        minutes, self._minutes = self._minutes, {}
        if not sites and not minutes:
            return
        index = f"{self.prefix}sites"
        async with self.redis.pipeline(transaction=False) as pipe:
            for site, counts in sites.items():
                key = f"{self.prefix}site:{site}"
                newest = 0
                for outcome, count in counts.counts.items():
                    pipe.hincrby(key, outcome, count)
                for outcome, (ms, url) in counts.last.items():
                    pipe.hset(key, mapping={f"last:{outcome}": ms, f"url:{outcome}": url})
                    newest = max(newest, ms)
                pipe.expire(key, SITE_TTL_SECONDS)
                pipe.zadd(index, {site: newest})
            if sites:
                pipe.expire(index, SITE_TTL_SECONDS)
            for minute, count in minutes.items():
                key = f"{self.prefix}hits:{minute // 3600}"
                pipe.hincrby(key, str(minute), count)
                pipe.expire(key, HOUR_TTL_SECONDS)
            await pipe.execute()
        if sites:
            await self._forget_old_sites(index)

    async def _forget_old_sites(self, index: str) -> None:
        """Past MAX_SITES, or not heard from for SITE_TTL_SECONDS: a site leaves the index and
        its hash goes with it (any number of origins a client makes up costs at most MAX_SITES
        hashes)."""
        oldest = int((time.time() - SITE_TTL_SECONDS) * 1000)
        found: Any = await self.redis.zrange(index, 0, -MAX_SITES - 1)
        found += await self.redis.zrangebyscore(index, "-inf", oldest)
        doomed = sorted({_text(origin) for origin in found})
        if doomed:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(*(f"{self.prefix}site:{origin}" for origin in doomed))
                pipe.zrem(index, *doomed)
                await pipe.execute()

    async def flush_forever(self) -> None:
        """Runs for the life of the app."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except RedisError as exc:
                log.debug("traffic counts of the last second dropped: %s", exc)
            self.flushed.set()

    async def close(self) -> None:
        with contextlib.suppress(RedisError):
            await self.flush()

    async def sites(self, limit: int) -> list[tuple[str, int, dict[str, str]]]:
        """The most recently heard-from sites, newest first: (origin, when it was last heard
        from in ms, its hash)."""
        found: Any = await self.redis.zrevrange(f"{self.prefix}sites", 0, limit - 1, withscores=True)
        origins = [(_text(origin), int(score)) for origin, score in found]
        async with self.redis.pipeline(transaction=False) as pipe:
            for origin, _ in origins:
                pipe.hgetall(f"{self.prefix}site:{origin}")
            hashes = await pipe.execute()
        return [
            (origin, heard, {_text(k): _text(v) for k, v in raw.items()})
            for (origin, heard), raw in zip(origins, hashes, strict=True)
            if raw
        ]

    async def hits_per_minute(self, minutes: int) -> list[tuple[int, int]]:
        """(minute in epoch seconds, hits recorded) for the last `minutes` minutes, oldest first,
        this one included (zeros where nothing was recorded)."""
        now = int(time.time() // 60 * 60)
        wanted = [now - 60 * n for n in range(minutes - 1, -1, -1)]
        hours = sorted({minute // 3600 for minute in wanted})
        async with self.redis.pipeline(transaction=False) as pipe:
            for hour in hours:
                pipe.hgetall(f"{self.prefix}hits:{hour}")
            found: dict[int, int] = {}
            for raw in await pipe.execute():
                found.update({int(_text(k)): int(_text(v)) for k, v in raw.items()})
        return [(minute, found.get(minute, 0)) for minute in wanted]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
