"""StreamHub: the one reader of the activity stream in this process, fanning out to subscribers.

Each subscriber has a bounded queue. When it is full, newer events are not queued: a single LAGGED
marker counts them, in their place, so memory stays bounded and the order stays honest. The marker
carries the id of the last event queued before the gap, so a client can fetch what it missed by
resubscribing with `after` set to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from subscriptions.online import VisitorsOnline

log = logging.getLogger(__name__)
Event = dict[str, Any]
T = TypeVar("T")


def stream_id(value: str | bytes) -> tuple[int, int]:
    """`1700000000000-3` as a comparable pair; `ValueError` for anything else."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        raise ValueError(f"not a stream id: {text!r}")
    return int(ms), int(seq or 0)


@dataclass
class Lagged:
    """Stands for the events a slow subscriber did not get."""

    skipped: int
    last_delivered: str | None


class Subscriber(Generic[T]):
    """A bounded queue of `(entry id, item)`; past `limit`, one LAGGED marker counts what did not
    fit. Items are events for a lone subscription, rendered payloads for a member of a shared
    group (subscriptions/shared.py)."""

    def __init__(self, limit: int, accepts: Callable[[T], bool] | None = None) -> None:
        self.limit = limit
        # The subscription's filter, applied when an event is offered: events it does not want
        # cost no queue place, no LAGGED count and no GraphQL execution.
        self.accepts = accepts
        self.queue: deque[tuple[str, T] | Lagged] = deque()
        self.last_queued: str | None = None
        self.ready = asyncio.Event()

    def offer(self, entry_id: str, item: T) -> None:
        if self.accepts is not None and not self.accepts(item):
            return
        if len(self.queue) >= self.limit:
            self.lag(1, self.last_queued)
        else:
            self.queue.append((entry_id, item))
            self.last_queued = entry_id
        self.ready.set()

    def lag(self, skipped: int, last_delivered: str | None) -> None:
        """Count `skipped` events as missed, in one marker at the tail whose cursor is
        `last_delivered` (the last event the subscriber gets before the gap)."""
        tail = self.queue[-1] if self.queue else None
        if isinstance(tail, Lagged):
            tail.skipped += skipped
        else:
            self.queue.append(Lagged(skipped, last_delivered))
        self.ready.set()

    async def get(self) -> tuple[str, T] | Lagged:
        while not self.queue:
            self.ready.clear()
            await self.ready.wait()
        return self.queue.popleft()


class StreamHub:
    def __init__(self, redis: Redis, stream_key: str, queue_limit: int, block_ms: int = 1000) -> None:
        self.redis = redis
        self.stream_key = stream_key
        self.queue_limit = queue_limit
        self.block_ms = block_ms
        self.subscribers: set[Subscriber[Event]] = set()
        # visitorsOnline's counts of this process (subscriptions/feed.py), made on first use.
        self.online: VisitorsOnline | None = None
        self.last_id = "$"
        # No subscriber: the reader waits instead of reading (entries fetched for nobody cost the
        # process ~10 us each at full ingest). The first subscriber moves `last_id` to the end of
        # the stream and wakes it, under `_joining`.
        self.idle = False
        self._resolve = False  # `last_id` must be set to the stream's end before the next read
        self._woken = asyncio.Event()
        self._joining = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Supervision: how often the reader died of something other than a Redis error, and of
        # what last (reported by /health).
        self.restarts = 0
        self.last_failure: str | None = None
        # Notified when the reader advances or the subscribers change (for waiters such as tests
        # and readiness checks).
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        self.last_id = await self._newest_id()
        self._task = asyncio.create_task(self._supervise(), name="activity-stream-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def subscribe(
        self, accepts: Callable[[Event], bool] | None = None
    ) -> AsyncIterator[Subscriber[Event]]:
        subscriber: Subscriber[Event] = Subscriber(self.queue_limit, accepts)
        async with self._joining:
            if self.idle:
                # Events from now on: the stream's newest entry is read before the subscriber
                # joins, so everything appended after this call is offered to it (when Redis
                # does not answer, the reader reads it first, before anything else).
                try:
                    self.last_id, self._resolve = await self._newest_id(), False
                except RedisError:
                    self._resolve = True
                self.idle = False
                self._woken.set()
            self.subscribers.add(subscriber)
        await self._notify()
        try:
            yield subscriber
        finally:
            self.subscribers.discard(subscriber)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[StreamHub], bool]) -> None:
        """Until `predicate(hub)` holds: e.g. a subscriber count, or the reader past an id."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _newest_id(self) -> str:
        newest: Any = await self.redis.xrevrange(self.stream_key, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def caught_up(self) -> None:
        """Until the reader has fanned out every entry the stream holds now (at once while idle:
        nobody to fan out to)."""
        newest: Any = await self.redis.xrevrange(self.stream_key, count=1)
        if newest and not self.idle:
            target = stream_id(_text(newest[0][0]))
            await self.wait_for(
                lambda hub: hub.idle or (hub.last_id != "$" and stream_id(hub.last_id) >= target)
            )

    def status(self) -> str:
        """For /health: "ok", "stopped", or the restarts and the last failure."""
        if self._task is None or self._task.done():
            return "stopped"
        if self.restarts:
            return f"ok (restarted {self.restarts} times; last failure: {self.last_failure})"
        return "ok"

    async def _supervise(self) -> None:
        """Keep the reader running: a failure that is not a Redis error (a bug, an entry that
        breaks the parser) is logged and the reader restarts after a backoff, from the entry
        after the one it was at, so one poisoned entry cannot stop the live feed."""
        delay = 0.1
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarts += 1
                self.last_failure = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.exception("the activity stream reader failed; restarting in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            if not self.subscribers and not self._joining.locked():
                self.idle = True
                self._woken.clear()
                await self._notify()
                await self._woken.wait()
                continue
            try:
                if self._resolve:
                    self.last_id, self._resolve = await self._newest_id(), False
                response = await self.redis.xread(
                    {self.stream_key: self.last_id}, count=500, block=self.block_ms
                )
                delay = 0.1
            except RedisError:
                log.warning("reading %s failed; retrying in %.1f s", self.stream_key, delay, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            batches: list[Any] = list(response or [])
            for _, entries in batches:
                for raw_id, fields in entries:
                    entry_id = _text(raw_id)
                    self.last_id = entry_id
                    if not self.subscribers:
                        continue  # the last one left during the read: not even parsed
                    event = parse(fields)
                    if event is None:
                        continue
                    for subscriber in list(self.subscribers):
                        subscriber.offer(entry_id, event)
            if batches:
                await self._notify()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse(fields: dict[Any, Any] | None) -> Event | None:
    raw = (fields or {}).get(b"event") or (fields or {}).get("event")
    if not raw:
        return None
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # what the standard library reads and orjson does not (NaN, lone surrogates)
            event = json.loads(raw)
        except ValueError:
            return None
    return event if isinstance(event, dict) else None


async def history(
    redis: Redis, stream_key: str, after: str, batch: int = 500
) -> AsyncIterator[tuple[str, Event]]:
    """Every entry after `after`, oldest first."""
    start = f"({after}"
    while True:
        entries: Any = await redis.xrange(stream_key, min=start, max="+", count=batch)
        if not entries:
            return
        for raw_id, fields in entries:
            event = parse(fields)
            if event is not None:
                yield _text(raw_id), event
        start = "(" + _text(entries[-1][0])
