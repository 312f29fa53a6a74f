"""The app's Redis client: redis-py's asyncio client, except that a cancelled command ends in
CancelledError.

redis-py's asyncio client can end a command normally although the task running it was
cancelled meanwhile: measured on this machine, about one cancel in four during a loop of XRANGE
(redis-py 5.2.1, 6.4.0, 7.4.1, 8.0.1, 8.1.0, with and without socket timeouts). The task then
goes on as if nothing had happened: a websocket subscription closed while it read its history
kept its socket (and the server's shutdown waiting for it) forever. Every command, pipeline and
pub/sub read through this client checks, once it returns, whether its task was cancelled, and
raises CancelledError if so (tests/storage/test_redis_client.py). `stop_if_cancelled` is the
same check for any other await a library may end that way (loops that retry on errors, a write
to a closing websocket).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis as _Redis
from redis.asyncio.client import Pipeline as _Pipeline
from redis.asyncio.client import PubSub as _PubSub


def stop_if_cancelled() -> None:
    """Raise the CancelledError that the current task's cancellation should have raised (a
    library ended the awaited call normally, or with its own error, instead)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Pipeline(_Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error)
        finally:
            stop_if_cancelled()


class PubSub(_PubSub):
    async def get_message(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_message(*args, **kwargs)
        finally:
            stop_if_cancelled()


class Redis(_Redis):
    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        finally:
            stop_if_cancelled()

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def pubsub(self, **kwargs: Any) -> PubSub:
        return PubSub(self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs)
