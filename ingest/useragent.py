"""User agents: parsed device/browser/OS, and whether the request comes from a bot.

`parse_user_agent` is the pure parse (DeviceDetector, ~1-10 ms for a real agent, and up to a few
hundred for a crafted one). Requests use `UserAgentParser`, which never parses on the event loop:
agents are cut to MAX_USER_AGENT_LENGTH before anything else, kept in an LRU, and a miss is parsed
on a worker thread (the `regex` module DeviceDetector uses releases the GIL) for at most
PARSE_TIMEOUT_SECONDS; past that the request goes on with the agent unparsed (bot list only)
and the result is cached when it arrives.

Bot detection combines Matomo's DeviceDetector (through the `device-detector` port) with the
substring list Mautic ships. HTTP libraries such as `okhttp` and `CFNetwork` are deliberately
not on the list: native mobile apps use them to call the pixel.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from device_detector import DeviceDetector

MAX_USER_AGENT_LENGTH = 1024
CACHE_SIZE = 8192
PARSE_TIMEOUT_SECONDS = 0.25
# Misses being parsed or waiting for the worker; past this, new agents go unparsed at once.
MAX_PENDING = 64

# Case-sensitive substrings, as in Mautic's `do_not_track_bots` (a representative subset of its
# 389 entries, plus crawlers that appeared since).
BOT_SUBSTRINGS = (
    "Googlebot",
    "AdsBot-Google",
    "Mediapartners-Google",
    "APIs-Google",
    "Google-InspectionTool",
    "bingbot",
    "BingPreview",
    "msnbot",
    "Slurp",
    "DuckDuckBot",
    "Baiduspider",
    "YandexBot",
    "YandexImages",
    "Sogou",
    "Exabot",
    "facebot",
    "facebookexternalhit",
    "ia_archiver",
    "archive.org_bot",
    "AhrefsBot",
    "SemrushBot",
    "MJ12bot",
    "DotBot",
    "PetalBot",
    "Applebot",
    "Twitterbot",
    "LinkedInBot",
    "Slackbot",
    "Discordbot",
    "TelegramBot",
    "WhatsApp",
    "Pinterest",
    "redditbot",
    "rogerbot",
    "Screaming Frog",
    "SeznamBot",
    "Qwantify",
    "YisouSpider",
    "Bytespider",
    "GPTBot",
    "ChatGPT-User",
    "ClaudeBot",
    "anthropic-ai",
    "CCBot",
    "Amazonbot",
    "PhantomJS",
    "HTTrack",
    "Scrapy",
    "UptimeRobot",
    "Pingdom",
    "StatusCake",
    "SiteAuditBot",
    "crawler",
    "Crawler",
    "spider",
    "Spider",
    "curl",
    "Wget",
    "wget",
    "python-requests",
    "Python-urllib",
    "Go-http-client",
    "axios",
    "Apache-HttpClient",
    "libwww-perl",
    "Java/",
)


@dataclass(frozen=True, slots=True)
class UserAgent:
    raw: str
    is_bot: bool
    client_type: str = ""
    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device_type: str = ""
    brand: str = ""
    model: str = ""

    def as_document(self) -> dict[str, str]:
        return {
            "raw": self.raw,
            "client_type": self.client_type,
            "browser": self.browser,
            "browser_version": self.browser_version,
            "os": self.os,
            "os_version": self.os_version,
            "device_type": self.device_type,
            "brand": self.brand,
            "model": self.model,
        }


def matches_bot_list(raw: str) -> bool:
    return any(part in raw for part in BOT_SUBSTRINGS)


def unparsed(raw: str) -> UserAgent:
    """An agent as it is, when it could not be parsed in time: only the bot list applies."""
    raw = raw[:MAX_USER_AGENT_LENGTH]
    return UserAgent(raw=raw, is_bot=matches_bot_list(raw))


def parse_user_agent(raw: str) -> UserAgent:
    """The parse itself (pure, uncached, may take long: see `UserAgentParser`)."""
    raw = raw[:MAX_USER_AGENT_LENGTH]
    if not raw.strip():
        return UserAgent(raw=raw, is_bot=False)
    parsed = DeviceDetector(raw).parse()
    return UserAgent(
        raw=raw,
        is_bot=bool(parsed.is_bot()) or matches_bot_list(raw),
        client_type=parsed.client_type() or "",
        browser=parsed.client_name() or "",
        browser_version=parsed.client_version() or "",
        os=parsed.os_name() or "",
        os_version=parsed.os_version() or "",
        device_type=parsed.device_type() or "",
        brand=parsed.device_brand() or "",
        model=parsed.device_model() or "",
    )


WARM_UP_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 Firefox/128.0",
)


def warm_up() -> None:
    """DeviceDetector compiles its ~2,000 regexes lazily, ~2 s in all: do it before serving, not
    during the first visitors' requests."""
    for agent in WARM_UP_AGENTS:
        parse_user_agent(agent)


class UserAgentParser:
    """Parsed agents for requests: an LRU of CACHE_SIZE, misses parsed off the event loop within
    a time bound. One per app (owned by the ingest pipeline); `close` stops the worker."""

    def __init__(
        self,
        size: int = CACHE_SIZE,
        timeout: float = PARSE_TIMEOUT_SECONDS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.size = size
        self.timeout = timeout
        self.max_pending = max_pending
        self.cache: OrderedDict[str, UserAgent] = OrderedDict()
        self.pending: dict[str, Future[UserAgent]] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="user-agents")
        self.parses = 0  # misses sent to the worker (a metric, and what tests count)

    async def parse(self, raw: str) -> UserAgent:
        key = raw[:MAX_USER_AGENT_LENGTH]
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.move_to_end(key)
            return cached
        future = self.pending.get(key)
        if future is None:
            if len(self.pending) >= self.max_pending:
                return unparsed(key)
            future = self.executor.submit(parse_user_agent, key)
            self.parses += 1
            self.pending[key] = future
            loop = asyncio.get_running_loop()
            future.add_done_callback(lambda done: loop.call_soon_threadsafe(self._store, key, done))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout)
        except TimeoutError:
            return unparsed(key)

    def _store(self, key: str, future: Future[UserAgent]) -> None:
        self.pending.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return
        self.cache[key] = future.result()
        self.cache.move_to_end(key)
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
