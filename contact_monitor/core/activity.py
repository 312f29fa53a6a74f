"""The activity stream: every stored activity is appended to the Redis stream `<prefix>activity`.

Each entry has one field, `event`, holding JSON:

    {"type": "page_hit", "contact_id": "...", "occurred_at": "2026-11-27T05:11:04.123Z",
     "contact": {"id": "...", "email": null, "anonymous": true}, ...type-specific keys}

Other services may consume the stream directly (XREAD / XREADGROUP); the subscriptions of the
GraphQL API read the same stream.
Every kind and its keys: docs/data-contract.md, "Activity stream".
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson
from bson import ObjectId
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from contact_monitor.storage import Storage
from contact_monitor.storage.outbox import OutboxRepository

# The one list of activity kinds. Everything else is derived from it: the GraphQL enums
# (`ActivityType`, `TimelineType`), the timeline's sources, what `activities` stores, the stream.
ActivityType = Literal[
    "page_hit",
    "contact_created",
    "contact_identified",
    "contact_merged",
    "contact_unmerged",
    "contact_deleted",
    "tags_changed",
    "fields_updated",
    "form_submitted",
    "custom_activity",
    "points_changed",
    "trigger_fired",
]
ACTIVITY_TYPES: tuple[ActivityType, ...] = get_args(ActivityType)
# Not kept in `activities`: page hits live in `hits`, and the timeline shows neither a contact's
# creation (its createdAt says it) nor its deletion (nothing is left to show). Skipping
# contact_created saves an insert on every new visitor's hit.
NOT_STORED: frozenset[ActivityType] = frozenset({"page_hit", "contact_created", "contact_deleted"})
STORED_TYPES: tuple[ActivityType, ...] = tuple(t for t in ACTIVITY_TYPES if t not in NOT_STORED)
# A contact's timeline: its page hits (`hits`), the UTM records of those hits (the hits with
# UTM codes, and `utm_records` written by earlier versions; shown as their own entries) and the
# stored activities.
TIMELINE_TYPES: tuple[str, ...] = ("page_hit", "utm_recorded", *STORED_TYPES)

log = logging.getLogger(__name__)
ONLINE_RETENTION_SECONDS = 3600


def new_activity_id() -> str:
    return str(ObjectId())


@dataclass(frozen=True, slots=True)
class Activity:
    type: ActivityType
    contact_id: str
    occurred_at: dt.datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    # Unique per activity, on the stream as `activity_id`: a page hit's is its hit id, a stored
    # activity's its timeline document's id. Rules and webhooks deduplicate by it.
    id: str = field(default_factory=new_activity_id)

    def to_json(self, contact: Mapping[str, Any] | None) -> str:
        summary = None
        if contact is not None:
            summary = {
                "id": contact["_id"],
                "email": contact.get("fields", {}).get("email"),
                "anonymous": bool(contact.get("anonymous", True)),
                "tags": list(contact.get("tags", [])),
            }
        body = {
            "type": self.type,
            "contact_id": self.contact_id,
            "occurred_at": isoformat(self.occurred_at),
            "activity_id": self.id,
            "contact": summary,
            **self.data,
        }
        return encode_event(body)


def encode_event(body: Mapping[str, Any]) -> str:
    """Compact JSON, non-ASCII as is; datetimes as `isoformat`, ObjectIds as strings. orjson, or
    the standard library for what orjson refuses (integers beyond 64 bits, non-string keys)."""
    try:
        return orjson.dumps(body, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except TypeError:
        return json.dumps(body, default=_json_default, separators=(",", ":"), ensure_ascii=False)


def now_ms() -> dt.datetime:
    """The current UTC time at BSON's millisecond precision, so stored and computed times agree."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def isoformat(moment: dt.datetime) -> str:
    """UTC with milliseconds and a Z, the form JavaScript's Date parses everywhere."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return isoformat(value)
    if isinstance(value, ObjectId):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


# Appends outbox entries to the stream (KEYS[1]) in order, each once: KEYS[i] (i >= 2) is the
# marker of the entry ARGV[i + 1], set once it is appended (a republisher that stopped between
# appending and deleting the entries does not append them twice). An error stops the script at
# that entry: those after it are not appended before it. ARGV[1]: MAXLEN, ARGV[2]: marker TTL.
APPEND_ONCE = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i + 1])
    redis.call('SET', KEYS[i], '1', 'EX', ARGV[2])
  end
end
return #KEYS - 1
"""
MARKER_SECONDS = 7 * 24 * 3600
OUTBOX_BATCH = 500
# A batch's entries in one command (ARGV[1]: MAXLEN, then the events), their ids in order: a
# pipeline of one XADD each costs the process about twice as much per entry.
APPEND = """
local ids = {}
for i = 2, #ARGV do
  ids[i - 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i])
end
return ids
"""


PUBLISH_BATCH = 512  # stream entries per pipelined round trip at most
# One caller's activities, their encoded entries, and what it awaits (the entries' stream ids).
Publication = tuple[Sequence[Activity], list[str], asyncio.Future[list[str]]]


class ActivityPublisher:
    """Appends activities to the stream: the publishes of concurrent requests go together, one
    pipelined round trip per batch (requests whose hits were stored in the same group commit
    resume together and publish together). Each caller awaits its own entries' ids; one batch is
    in flight at a time and what arrives meanwhile forms the next, so the order is kept.

    Nothing is lost when Redis is unavailable: the entries go to the MongoDB `outbox` (so do
    later ones while any wait there, to keep the order) and `republish` appends them, in order
    and once each, when Redis answers again."""

    def __init__(
        self,
        redis: Redis,
        stream_key: str,
        maxlen: int,
        online_key: str | None = None,
        outbox: OutboxRepository | None = None,
        prefix: str = "",
    ) -> None:
        self.redis = redis
        self.stream_key = stream_key
        self.maxlen = maxlen
        # Sorted set contact id -> time of last page hit, for "visitors online" without MongoDB.
        self.online_key = online_key
        self.outbox = outbox
        self.prefix = prefix
        self.backlog = False  # entries of this process wait in the outbox
        self._pending: list[Publication] = []
        self._sender: asyncio.Task[None] | None = None
        self._append_sha: str | None = None
        self.waiting = asyncio.Event()  # something was put in the outbox
        self.drained = asyncio.Event()  # the outbox was emptied (tests and readiness wait on it)

    async def publish(self, activities: Sequence[Activity], contact: Mapping[str, Any] | None) -> list[str]:
        """Returns the stream ids (none when the entries went to the outbox). A Redis outage
        never fails the request: the activity is stored in MongoDB, and so is its entry."""
        if not activities:
            return []
        events = [activity.to_json(contact) for activity in activities]
        # Through the queue also while entries wait in the outbox: `_send` defers them there,
        # after what was queued before them.
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending.append((activities, events, future))
        if self._sender is None or self._sender.done():
            # Not the request's context: its MongoDB deadline must not bind the outbox writes.
            self._sender = asyncio.create_task(
                self._send_pending(), name="activity-publisher", context=contextvars.Context()
            )
        return await future

    async def _send_pending(self) -> None:
        try:
            await asyncio.sleep(0)  # callers resumed in this same turn of the loop join the batch
            while self._pending:
                batch: list[Publication] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][1]) <= PUBLISH_BATCH):
                    batch.append(self._pending.pop(0))
                    size += len(batch[-1][1])
                await self._send(batch)
        except BaseException as exc:  # never leave a caller waiting on a dead sender
            pending, self._pending = self._pending, []
            for *_, future in pending:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("stopped"))
            raise

    async def _send(self, batch: list[Publication]) -> None:
        activities = [activity for acts, _, _ in batch for activity in acts]
        events = [event for _, evs, _ in batch for event in evs]
        ids: list[str] = []
        try:
            if self.backlog and self.outbox is not None:  # Redis failed since these were queued
                await self._defer(activities, events)
            else:
                try:
                    raw = await self._append(activities, events)
                    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw]
                except RedisError:
                    if self.outbox is None:
                        log.exception("could not publish %d activities to %s", len(events), self.stream_key)
                    else:
                        log.warning("Redis unavailable: %d stream entries kept in the outbox", len(events))
                        await self._defer(activities, events)
        except Exception as exc:  # the outbox could not take them either: every caller hears it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        offset = 0
        for _, evs, future in batch:
            if not future.done():  # the caller may have given up (cancelled)
                future.set_result(ids[offset : offset + len(evs)])
            offset += len(evs)

    async def _append(self, activities: Sequence[Activity], events: Sequence[str]) -> list[Any]:
        """The entries (one script call) and the online set, in one pipelined round trip. The
        script's SHA is kept here rather than by `register_script`, whose pipelines ask Redis
        whether it exists (SCRIPT EXISTS) before every execution: a round trip per batch."""
        for attempt in range(2):
            if self._append_sha is None:
                self._append_sha = await self.redis.script_load(APPEND)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.evalsha(self._append_sha, 1, self.stream_key, self.maxlen, *events)
                    self._track_online(pipe, activities)
                    return list((await pipe.execute())[0])
            except NoScriptError:  # Redis restarted (or SCRIPT FLUSH) since it was loaded
                self._append_sha = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _defer(self, activities: Sequence[Activity], events: Sequence[str]) -> None:
        assert self.outbox is not None
        named = [
            [
                activity.contact_id,
                *([str(activity.data["merged_id"])] if "merged_id" in activity.data else []),
            ]
            for activity in activities
        ]
        await self.outbox.add(self.stream_key, list(zip(events, named, strict=True)))
        self.backlog = True
        self.drained.clear()
        self.waiting.set()

    async def republish(self, retry_seconds: float = 1.0) -> None:
        """Runs for the life of the app: empties the outbox into the stream whenever it holds
        entries (also those a stopped process left) and Redis answers."""
        assert self.outbox is not None
        append_once = self.redis.register_script(APPEND_ONCE)
        delay = retry_seconds
        while True:
            try:
                self.waiting.clear()  # set again by any entry deferred while this pass runs
                while batch := await self.outbox.oldest(OUTBOX_BATCH):
                    for stream, run in itertools.groupby(batch, key=lambda entry: entry["stream"]):
                        entries = list(run)
                        await append_once(
                            keys=[stream, *(f"{self.prefix}outbox:{entry['_id']}" for entry in entries)],
                            args=[self.maxlen, MARKER_SECONDS, *(entry["event"] for entry in entries)],
                        )
                    await self.outbox.remove(entry["_id"] for entry in batch)
                    if len(batch) < OUTBOX_BATCH:
                        # All there was when read; what was added since set `waiting` (below).
                        break
                if self.waiting.is_set():
                    continue  # an entry arrived during the pass: drain again before going direct
                self.backlog = False
                self.drained.set()
                delay = retry_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.waiting.wait(), retry_seconds * 5)
            except (RedisError, PyMongoError):
                log.warning("outbox not emptied yet; retrying in %.1f s", delay, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _track_online(self, pipe: Any, activities: Sequence[Activity]) -> None:
        if self.online_key is None:
            return
        newest = None
        seen: dict[str, float] = {}  # the page hits since the last removal: one ZADD for them

        def add_seen() -> None:
            if seen:
                pipe.zadd(self.online_key, dict(seen))
                seen.clear()

        for activity in activities:
            if activity.type == "page_hit":
                now = activity.occurred_at.timestamp()
                seen[activity.contact_id] = max(now, seen.get(activity.contact_id, now))
                newest = now if newest is None else max(newest, now)
            elif activity.type in ("contact_merged", "contact_deleted"):
                add_seen()  # in order: a hit before the removal must not bring the id back after it
                if activity.type == "contact_merged":
                    pipe.zrem(self.online_key, str(activity.data.get("merged_id")))
                else:
                    pipe.zrem(self.online_key, activity.contact_id)
        add_seen()
        if newest is not None:  # once per batch
            pipe.zremrangebyscore(self.online_key, "-inf", newest - ONLINE_RETENTION_SECONDS)

    async def erase_waiting(self, contact_ids: set[str]) -> int:
        """Remove these contacts' entries from the outbox, and mark them appended so that a
        republisher that already read them skips them (when Redis answers). Returns how many."""
        if self.outbox is None:
            return 0
        waiting = await self.outbox.for_contacts(contact_ids)
        if waiting:
            with contextlib.suppress(RedisError):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for entry_id in waiting:
                        pipe.set(f"{self.prefix}outbox:{entry_id}", "1", nx=True, ex=MARKER_SECONDS)
                    await pipe.execute()
            await self.outbox.remove(waiting)
        return len(waiting)

    async def erase(self, contact_ids: set[str], batch: int = 1000) -> int:
        """Delete the stream entries of these contacts (GDPR erasure); returns how many."""
        erased = 0
        start = "-"
        while True:
            entries = await self.redis.xrange(self.stream_key, min=start, max="+", count=batch)
            if not entries:
                return erased
            doomed: list[bytes | str] = []
            for entry_id, fields in entries:
                try:
                    event = json.loads((fields or {}).get(b"event", b"{}"))
                except ValueError:
                    continue
                if entry_id is None:
                    continue
                if event.get("contact_id") in contact_ids or event.get("merged_id") in contact_ids:
                    doomed.append(entry_id)
            if doomed:
                erased += await self.redis.xdel(self.stream_key, *doomed)
            last = entries[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


class ActivityRecorder:
    """Every activity is kept on the contact's timeline (`activities` collection; page hits are in
    `hits`) and then appended to the stream."""

    def __init__(self, storage: Storage, publisher: ActivityPublisher) -> None:
        self.storage = storage
        self.publisher = publisher
        # Awaited with the stored timeline documents (set by `Services`: the merge sweep).
        self.after_write: Callable[[list[dict[str, Any]]], Awaitable[object]] | None = None

    async def record(
        self, activities: Sequence[Activity], contact: Mapping[str, Any] | None
    ) -> list[dict[str, Any]]:
        """Store, then publish; returns the stored timeline documents."""
        documents = self.documents(activities)
        await self.storage.activities.insert_many(documents)
        await self.publish_stored(activities, documents, contact)
        return documents

    @staticmethod
    def documents(activities: Sequence[Activity]) -> list[dict[str, Any]]:
        """The timeline documents of the activities that are kept (`NOT_STORED` are not)."""
        return [
            {
                "_id": ObjectId(a.id),
                "contact_id": a.contact_id,
                "type": a.type,
                "occurred_at": a.occurred_at,
                "data": {**a.data},
            }
            for a in activities
            if a.type not in NOT_STORED
        ]

    async def publish_stored(
        self,
        activities: Sequence[Activity],
        documents: list[dict[str, Any]],
        contact: Mapping[str, Any] | None,
    ) -> None:
        """After the activities' documents were stored (by `record`, or in a caller's transaction)."""
        if documents and self.after_write is not None:
            try:
                await self.after_write(documents)
            except Exception:  # stored all the same; the periodic merge sweep finishes the job
                log.warning("after-write step of timeline entries failed", exc_info=True)
        await self.publisher.publish(activities, contact)
