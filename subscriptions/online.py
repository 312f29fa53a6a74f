"""visitorsOnline for a whole process: one Redis count a second per window in use, whatever the
number of subscribers (they share the poll; each gets every change)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
MAX_ONLINE_WINDOW = 3600
ONLINE_TICK_SECONDS = 1.0


class _Poller:
    """One window's count, read from Redis once a second for every subscriber of the process."""

    def __init__(self, redis: Redis, online_key: str, window: int) -> None:
        self.redis, self.online_key, self.window = redis, online_key, window
        self.count: int | None = None
        self.changed = asyncio.Event()
        self.users = 0
        self.task = asyncio.create_task(self._run(), name=f"visitors-online-{window}")

    async def _run(self) -> None:
        while True:
            try:
                count = int(await self.redis.zcount(self.online_key, time.time() - self.window, "+inf"))
            except RedisError:  # an outage: the last count stands until Redis answers again
                log.warning("counting visitors online failed; retrying", exc_info=True)
            else:
                if count != self.count:
                    self.count = count
                    changed, self.changed = self.changed, asyncio.Event()
                    changed.set()
            await asyncio.sleep(ONLINE_TICK_SECONDS)


class VisitorsOnline:
    """`visitorsOnline(window)` for a whole process: one Redis count a second per window in
    use, whatever the number of subscribers (each gets every change)."""

    def __init__(self, redis: Redis, online_key: str) -> None:
        self.redis = redis
        self.online_key = online_key
        self.pollers: dict[int, _Poller] = {}

    async def counts(self, window: int) -> AsyncGenerator[int, None]:
        poller = self.pollers.get(window)
        if poller is None:
            poller = self.pollers[window] = _Poller(self.redis, self.online_key, window)
        poller.users += 1
        try:
            last: int | None = None
            while True:
                if poller.count is None or poller.count == last:
                    await poller.changed.wait()
                    continue
                last = poller.count
                yield last
        finally:
            poller.users -= 1
            if poller.users == 0 and self.pollers.get(window) is poller:
                del self.pollers[window]
                poller.task.cancel()
