"""Execute once, send many: subscriptions that asked for the same thing share one rendering.

A `SharedFeed` is one subscriber of the hub for a group of subscriptions with the same key (the
API uses the operation document, its variables but the resume cursor, and the caller's role: the
same filter and the same selection). The group takes the events its filter accepts in batches
(whatever the hub has queued, after waiting `linger` seconds for more), renders each event once
(`render`, given by the API: GraphQL execution and JSON serialization) and hands the same text to
every member:

- a member that can take bytes now (`LiveOperation.raw`: the server's transport, when it offers
  it) gets the whole batch as one write of ready-made frames, the same bytes for every member with
  the same `wire_key`: no task switch, no per-member serialization, one system call;
- any other member, or one whose socket is busy or still sending its history, gets the rendered
  payloads in its bounded queue, which its own writer drains through `write`. A full queue gets a
  LAGGED marker in place of what did not fit, exactly as a lone subscriber would, and a member
  whose queue stays full for `stuck_seconds` while events keep coming is given up: it leaves the
  group, its writer writes what is queued (the LAGGED marker last, whose cursor tells the client
  where to resume) and then calls `on_stuck` (the API closes the socket with 4410); if that has
  not happened `stuck_seconds` later (a client that reads nothing cannot take the close either),
  `abort` drops the connection. A member still sending its history is never stuck.

Markers, the history of a resumed subscription and a GAP are rendered per member (they differ per
member and are rare). The group's task ends when its last member leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass

from redis.asyncio import Redis

from subscriptions.feed import FeedItem, retention_gap
from subscriptions.filters import EventFilter
from subscriptions.hub import Event, Lagged, StreamHub, Subscriber, history, stream_id

log = logging.getLogger(__name__)

Render = Callable[[FeedItem], Awaitable[str]]
Write = Callable[[str], Awaitable[None]]
# True: written; None: the socket cannot take it now; False: the socket is closing or gone.
RawWrite = Callable[[bytes], bool | None]


@dataclass(frozen=True, slots=True)
class LiveOperation:
    """What a websocket transport tells the subscription resolver about the operation it runs."""

    key: Hashable  # operations with the same key render every event the same way
    render: Render  # an item to the `payload` of a `next` message, as JSON text
    write: Write  # a rendered payload to this operation's socket (awaits room in its buffer)
    on_stuck: Callable[[], Awaitable[None]]  # closes the socket of a member given up
    raw: RawWrite | None = None  # ready-made frames straight to the socket, when it can take them
    wire_key: Hashable = None  # operations with the same wire key get the same frame bytes
    encode: Callable[[str], bytes] | None = None  # a rendered payload to its frame bytes
    abort: Callable[[], None] | None = None  # drops the connection (when even a close cannot go)


# Set by the websocket transport for the task that runs one operation: builds its LiveOperation
# (called by the resolver, once the document has been validated). Unset (in-process
# `schema.subscribe`, tests of the resolver itself), subscriptions execute on their own.
current_operation: ContextVar[Callable[[], LiveOperation] | None] = ContextVar(
    "current_operation", default=None
)


class Member:
    """One subscription of a group: its queue of rendered payloads and its writer's state."""

    def __init__(self, operation: LiveOperation, limit: int, stuck_seconds: float) -> None:
        self.operation = operation
        self.queue: Subscriber[str] = Subscriber(limit)
        self.stuck_seconds = stuck_seconds
        self.full_since: float | None = None
        # Set when the group stops serving the member: "stuck" (given up: its socket is closed
        # once what is queued is written) or "gone" (its socket is closing anyway).
        self.ended: str | None = None
        # The writer is sending (history, or an item it took from the queue): the group must
        # queue, not write around it.
        self.busy = True
        # Sending its history: a full queue then is LAGGED, but not stuck (the client reads).
        self.replaying = False
        self.closed = False  # the 4410 close of a member given up was written
        self.last_sent: tuple[int, int] = (0, 0)

    def last_before_gap(self, fallback: str | None) -> str | None:
        """The cursor of the last event this member gets before events it will miss."""
        if self.queue.queue:
            return self.queue.last_queued
        if self.last_sent != (0, 0):
            return f"{self.last_sent[0]}-{self.last_sent[1]}"
        return fallback

    def direct(self) -> bool:
        return self.operation.raw is not None and not self.busy and not self.queue.queue

    def offer(self, entry_id: str, payload: str) -> bool:
        """Queue a rendered event; False once the member has been full for too long."""
        if len(self.queue.queue) < self.queue.limit or self.replaying:
            self.full_since = None
        elif self.full_since is None:
            self.full_since = time.monotonic()
        elif time.monotonic() - self.full_since > self.stuck_seconds:
            return False
        self.queue.offer(entry_id, payload)
        return True


class SharedFeed:
    def __init__(self, feeds: SharedFeeds, key: Hashable, event_filter: EventFilter, render: Render) -> None:
        self.feeds = feeds
        self.key = key
        self.filter = event_filter
        self.render = render
        self.members: set[Member] = set()
        self.task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        async with self.feeds.hub.subscribe(self.filter.matches) as subscriber:
            self.subscribed.set()
            while True:
                items = [await subscriber.get()]
                if self.feeds.linger > 0:
                    await asyncio.sleep(self.feeds.linger)
                while subscriber.queue:
                    items.append(subscriber.queue.popleft())
                try:
                    await self._process(items)
                except Exception:  # a bug must not end the feed of every member
                    log.exception("delivering live events failed")

    async def _process(self, items: list[tuple[str, Event] | Lagged]) -> None:
        batch: list[tuple[str, tuple[int, int], str]] = []
        for item in items:
            if isinstance(item, Lagged):
                self._deliver(batch)
                batch = []
                # This group fell behind: every member missed the same events.
                for member in self.members:
                    member.queue.lag(item.skipped, member.last_before_gap(item.last_delivered))
                continue
            entry_id, event = item
            payload = await self._render(FeedItem(cursor=entry_id, kind="event", event=event))
            batch.append((entry_id, stream_id(entry_id), payload))
        self._deliver(batch)

    def _deliver(self, batch: list[tuple[str, tuple[int, int], str]]) -> None:
        if not batch:
            return
        first, last = batch[0][1], batch[-1][1]
        wire: dict[Hashable, bytes] = {}
        for member in list(self.members):
            try:
                self._deliver_to(member, batch, first, last, wire)
            except Exception:  # one member's failure must not cost the others the batch
                log.exception("delivering live events to a subscription failed")
                self._leave(member, "gone")

    def _deliver_to(
        self,
        member: Member,
        batch: list[tuple[str, tuple[int, int], str]],
        first: tuple[int, int],
        last: tuple[int, int],
        wire: dict[Hashable, bytes],
    ) -> None:
        fresh = batch if member.last_sent < first else [e for e in batch if e[1] > member.last_sent]
        if not fresh:
            return
        operation = member.operation
        if member.direct() and operation.raw is not None and operation.encode is not None:
            if fresh is batch:
                frames = wire.get(operation.wire_key)
                if frames is None:
                    frames = wire[operation.wire_key] = b"".join(operation.encode(p) for *_, p in batch)
            else:
                frames = b"".join(operation.encode(p) for *_, p in fresh)
            written = operation.raw(frames)
            if written:
                member.last_sent = last
                return
            if written is False:  # the socket is going: its handler ends the operation
                self._leave(member, "gone")
                return
        for entry_id, _, payload in fresh:
            if not member.offer(entry_id, payload):
                self._give_up(member)
                return

    async def _render(self, item: FeedItem) -> str:
        try:
            return await self.render(item)
        except Exception:  # a bug must not end the feed of every member
            log.exception("rendering a live event failed")
            return INTERNAL_ERROR

    def _leave(self, member: Member, why: str) -> None:
        """The member gets nothing more from the group; its writer stops once its queue is
        written (and closes the socket of a member given up)."""
        self.members.discard(member)
        member.ended = why
        member.queue.ready.set()
        self.feeds.forget_if_empty(self)

    def _give_up(self, member: Member) -> None:
        self._leave(member, "stuck")
        self.feeds.closed_stuck += 1
        # A socket whose buffer never drains cannot take the close frame either: if it is not
        # written within the same time, the connection is dropped.
        abort = member.operation.abort
        if abort is not None:

            def drop() -> None:
                if not member.closed:
                    self.feeds.aborted_stuck += 1
                    abort()

            asyncio.get_running_loop().call_later(member.stuck_seconds, drop)


INTERNAL_ERROR = json.dumps(
    {
        "data": None,
        "errors": [{"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}],
    },
    separators=(",", ":"),
)


class SharedFeeds:
    """The groups of this process, by key."""

    def __init__(self, hub: StreamHub, queue_limit: int, stuck_seconds: float, linger: float = 0.0) -> None:
        self.hub = hub
        self.queue_limit = queue_limit
        self.stuck_seconds = stuck_seconds
        self.linger = linger
        self.groups: dict[Hashable, SharedFeed] = {}
        self.closed_stuck = 0  # members given up (closed with 4410, or dropped)
        self.aborted_stuck = 0  # of those, connections dropped: even the close could not be written

    @property
    def members(self) -> int:
        return sum(len(group.members) for group in self.groups.values())

    @contextlib.asynccontextmanager
    async def join(self, operation: LiveOperation, event_filter: EventFilter) -> AsyncIterator[Member]:
        group = self.groups.get(operation.key)
        if group is None:
            group = SharedFeed(self, operation.key, event_filter, operation.render)
            self.groups[operation.key] = group
            group.task = asyncio.create_task(group.run(), name=f"shared-feed-{id(group):x}")
        member = Member(operation, self.queue_limit, self.stuck_seconds)
        group.members.add(member)
        try:
            # Subscribed to the hub before the member is told it has joined: no event after the
            # join is missed (also when another member is starting the group).
            await group.subscribed.wait()
            yield member
        finally:
            group.members.discard(member)
            self.forget_if_empty(group)

    def forget_if_empty(self, group: SharedFeed) -> None:
        """A group without members stops (its task leaves the hub)."""
        if not group.members and self.groups.get(group.key) is group:
            del self.groups[group.key]
            if group.task is not None:
                group.task.cancel()


async def shared_feed(
    feeds: SharedFeeds,
    redis: Redis,
    stream_key: str,
    operation: LiveOperation,
    event_filter: EventFilter,
    after: str | None,
) -> None:
    """Run one subscription in its group until it is cancelled or given up: its history after
    `after` (with a GAP first when the stream was trimmed), then the group's live events and
    this member's LAGGED markers, each written to the socket in order, with no duplicate."""
    if after is not None:
        stream_id(after)  # ValueError for a malformed cursor, before anything is sent
    async with feeds.join(operation, event_filter) as member:
        render, write = operation.render, operation.write
        if after is not None:
            member.last_sent = stream_id(after)
            member.replaying = True
            oldest = await retention_gap(redis, stream_key, after)
            if oldest is not None:
                await write(await render(FeedItem(cursor=after, kind="gap", oldest_cursor=oldest)))
            async for entry_id, event in history(redis, stream_key, after):
                member.last_sent = stream_id(entry_id)
                if event_filter.matches(event):
                    await write(await render(FeedItem(cursor=entry_id, kind="event", event=event)))
            member.replaying = False
        queue = member.queue
        while True:
            if not queue.queue:
                if member.ended is not None:
                    if member.ended == "stuck":
                        # Everything queued, LAGGED marker included, is written: now the close.
                        await operation.on_stuck()
                        member.closed = True
                    await asyncio.Event().wait()  # the transport ends this operation
                member.busy = False  # the group may write directly until something is queued
            item = await queue.get()
            member.busy = True
            if isinstance(item, Lagged):
                cursor = item.last_delivered or f"{member.last_sent[0]}-{member.last_sent[1]}"
                await write(await render(FeedItem(cursor=cursor, kind="lagged", skipped=item.skipped)))
                continue
            entry_id, payload = item
            position = stream_id(entry_id)
            if position <= member.last_sent:
                continue  # already sent
            member.last_sent = position
            await write(payload)


__all__ = ["Event", "LiveOperation", "Member", "SharedFeed", "SharedFeeds", "current_operation"]
