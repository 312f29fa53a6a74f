"""contact_monitor/storage/redis_client.py against the real Redis: a task cancelled while it
runs Redis commands ends, every time (redis-py's own client lets about one in four go on)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from contact_monitor.settings import Settings
from contact_monitor.storage.redis_client import Redis

TRIALS = 150


async def cancelled_ones_that_went_on(work: Callable[[], Awaitable[Any]]) -> int:
    went_on = 0
    for _ in range(TRIALS):

        async def loop() -> None:
            while True:
                await work()

        task = asyncio.create_task(loop())
        await asyncio.sleep(random.random() * 0.003)  # anywhere in a command
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1)
        if not done:
            went_on += 1
            while not task.done():  # let it go for good before the next trial
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
    return went_on


@pytest.mark.parametrize("kind", ["command", "pipeline", "pubsub"])
async def test_a_cancelled_task_never_goes_on_after_its_redis_command(settings: Settings, kind: str) -> None:
    redis = Redis.from_url(settings.redis_url or "", socket_connect_timeout=2, socket_timeout=5)
    key = f"{settings.redis_prefix}cancel-test"
    await redis.xadd(key, {"event": "{}"})
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{settings.redis_prefix}cancel-channel")

    async def pipelined() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xrange(key, count=10)
            pipe.xlen(key)
            await pipe.execute()

    work = {
        "command": lambda: redis.xrange(key, count=500),
        "pipeline": pipelined,
        "pubsub": lambda: pubsub.get_message(timeout=0.001),
    }[kind]
    try:
        assert await cancelled_ones_that_went_on(work) == 0
    finally:
        await pubsub.aclose()
        await redis.delete(key)
        await redis.aclose()
