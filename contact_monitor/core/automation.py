"""The stream consumer behind rules and webhooks: a Redis consumer group (`automation`) on the
activity stream, so that with several server processes each activity is handled by one of them,
and never inside a tracking request.

For each entry: the rules are evaluated (`RuleEngine`, idempotent by activity id) and a delivery
is queued for each webhook of its type (idempotent too); then the entry is acknowledged. A
process that dies holding entries leaves them pending in the group: another process (or the
same one restarted) claims them once they have been idle CLAIM_IDLE_SECONDS, and handles them
again without doing anything twice. docs/automation.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from contact_monitor.core.loops import Worker
from contact_monitor.core.rules import RuleEngine
from contact_monitor.core.webhooks import Webhooks
from contact_monitor.storage.redis_client import stop_if_cancelled

log = logging.getLogger(__name__)

GROUP = "automation"
READ_COUNT = 1000
BLOCK_MS = 1000
LINGER_SECONDS = 0.5
CLAIM_IDLE_SECONDS = 30.0
Entry = tuple[Any, dict[Any, Any]]


def consumer_name() -> str:
    """Unique per process start: a restarted process claims its old entries like any other."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Automation(Worker):
    def __init__(
        self,
        redis: Redis,
        stream_key: str,
        rules: RuleEngine,
        webhooks: Webhooks,
        *,
        claim_idle_seconds: float = CLAIM_IDLE_SECONDS,
        linger: float = LINGER_SECONDS,
    ) -> None:
        super().__init__()
        self.redis = redis
        self.stream_key = stream_key
        self.rules = rules
        self.webhooks = webhooks
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.linger = linger
        self.consumer = consumer_name()
        self.handled = 0
        self.skipped = 0  # events the rules could not evaluate (logged)
        self.handled_at = time.monotonic()  # when a batch was last handled (idle gauge)
        self.lag_seconds = 0.0  # age of the newest entry handled, when it was handled
        self._claimed_at = 0.0
        self.progress = asyncio.Event()  # set after each handled batch (tests and tools wait on it)

    async def ensure_group(self) -> None:
        """The group starts at the stream's end when it is first created: history is not replayed."""
        try:
            await self.redis.xgroup_create(self.stream_key, GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Runs for the life of the app."""
        delay = 0.5
        while not self.stopping.is_set():
            try:
                await self.ensure_group()
                while not self.stopping.is_set():
                    await self.step()
                    delay = 0.5
            except ResponseError as exc:
                stop_if_cancelled()
                # The stream was deleted (while a read waited: UNBLOCKED): the group is made again.
                if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                    log.warning("automation consumer: %s; retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
            except (RedisError, PyMongoError, OSError) as exc:
                stop_if_cancelled()
                log.warning("automation consumer paused (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # a bug: logged, and the consumer goes on (never a silent stop)
                stop_if_cancelled()
                log.exception("automation consumer failed; retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def step(self, block_ms: int = BLOCK_MS) -> int:
        """Handle what is pending for too long elsewhere (a dead process's entries), then what is
        new. Returns how many entries were handled."""
        handled = 0
        now = time.monotonic()
        if now - self._claimed_at >= self.claim_idle_ms / 2000:
            self._claimed_at = now
            async with self.busy():
                handled += await self.claim_stale()
        response: Any = await self.redis.xreadgroup(
            GROUP, self.consumer, {self.stream_key: ">"}, count=READ_COUNT, block=block_ms
        )
        for _, entries in response or []:
            batch: list[Entry] = list(entries)
            async with self.busy():  # read from the group: handled and acknowledged before a stop
                await self.handle(batch)
            handled += len(batch)
        if 0 < handled < READ_COUNT and self.linger:
            # A small batch: let the next one grow (fewer round trips and transactions per
            # entry; rules and webhooks run this much later at most).
            await asyncio.sleep(self.linger)
        return handled

    async def claim_stale(self) -> int:
        handled = 0
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                self.stream_key, GROUP, self.consumer, self.claim_idle_ms, start_id=start, count=READ_COUNT
            )
            start, entries = reply[0], reply[1]
            live = [(entry_id, fields) for entry_id, fields in entries if fields is not None]
            if live:
                await self.handle(live)
                handled += len(live)
            # Trimmed from the stream before anyone handled them (Redis 7 lists them apart).
            gone = [entry_id for entry_id, fields in entries if fields is None]
            gone += list(reply[2]) if len(reply) > 2 else []
            if gone:
                log.warning(
                    "%d stream entries were trimmed (CM_STREAM_MAXLEN) before rules and webhooks "
                    "handled them: they are skipped",
                    len(gone),
                )
                await self.redis.xack(self.stream_key, GROUP, *gone)
            if start in (b"0-0", "0-0") or not entries:
                return handled

    async def handle(self, entries: Sequence[Entry]) -> None:
        """Evaluate and queue each entry, then acknowledge them together. An error leaves them
        unacknowledged (claimed again later); a malformed entry is acknowledged and logged."""
        events = []
        deliveries = []
        for entry_id, fields in entries:
            raw: bytes | str = fields.get(b"event") or fields.get("event") or b""
            try:
                event = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                log.warning("stream entry %r is not an activity event: skipped", entry_id)
                continue
            events.append(event)
            deliveries += await self.webhooks.deliveries_for(event, raw)
        await self.evaluate(events)
        await self.webhooks.deliver(deliveries)
        if entries:
            await self.redis.xack(self.stream_key, GROUP, *[entry_id for entry_id, _ in entries])
            self.handled += len(entries)
            newest = entries[-1][0]
            newest = newest.decode() if isinstance(newest, bytes) else str(newest)
            self.lag_seconds = max(time.time() - int(newest.split("-", 1)[0]) / 1000, 0.0)
            self.handled_at = time.monotonic()
            self.progress.set()

    async def evaluate(self, events: list[dict[str, Any]]) -> None:
        """The rules on a batch; when it fails for another reason than an outage (which leaves
        the entries pending, to be handled again), one event at a time, so that one event that
        cannot be evaluated is logged and skipped instead of stopping every later one."""
        try:
            await self.rules.evaluate_batch(events, time.monotonic())
            return
        except (RedisError, PyMongoError, OSError):
            raise
        except Exception:
            log.exception("rules failed on a batch of %d events; trying them one by one", len(events))
        for event in events:
            try:
                await self.rules.evaluate_batch([event], time.monotonic())
            except (RedisError, PyMongoError, OSError):
                raise
            except Exception:
                log.exception("rules skipped activity %s: it cannot be evaluated", event.get("activity_id"))
                self.skipped += 1

    async def close(self) -> None:
        """Leave the group's list of consumers when nothing is pending here (each start of a
        process is a consumer of its own; what a dead one held is claimed by the others)."""
        with contextlib.suppress(RedisError):
            for consumer in await self.redis.xinfo_consumers(self.stream_key, GROUP):
                name = consumer.get("name")
                name = name.decode() if isinstance(name, bytes) else name
                if name == self.consumer and not consumer.get("pending"):
                    await self.redis.xgroup_delconsumer(self.stream_key, GROUP, self.consumer)
