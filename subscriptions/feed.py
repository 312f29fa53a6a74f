"""The events one subscription receives: history after its cursor, then live, then markers."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from subscriptions.filters import EventFilter
from subscriptions.hub import Event, Lagged, StreamHub, history, stream_id


@dataclass(frozen=True, slots=True)
class FeedItem:
    cursor: str
    kind: Literal["event", "gap", "lagged"]
    event: Event | None = None
    skipped: int = 0
    oldest_cursor: str | None = None


async def retention_gap(redis: Redis, stream_key: str, after: str) -> str | None:
    """The oldest id the stream still holds when entries after `after` were trimmed, else None."""
    try:
        info: dict[str, Any] = await redis.xinfo_stream(stream_key)
    except ResponseError:  # no stream yet: nothing was trimmed
        return None
    first = info.get("first-entry")
    if not first:
        return None
    first_id = first[0].decode() if isinstance(first[0], bytes) else str(first[0])
    if stream_id(after) >= stream_id(first_id):
        return None
    added = info.get("entries-added")  # Redis >= 7; without it, assume entries were trimmed
    if added is not None and int(added) <= int(info.get("length", 0)):
        return None  # nothing was ever trimmed or deleted
    return first_id


async def activity_feed(
    hub: StreamHub, redis: Redis, stream_key: str, event_filter: EventFilter, after: str | None
) -> AsyncGenerator[FeedItem, None]:
    """Every matching event after `after` still in the stream, then live ones: no gap, no
    duplicate (the live queue is open before the history is read; ids already sent are skipped)."""
    if after is not None:
        stream_id(after)  # ValueError for a malformed cursor, before anything is sent
    async with hub.subscribe(event_filter.matches) as subscriber:
        last = after
        if after is not None:
            oldest = await retention_gap(redis, stream_key, after)
            if oldest is not None:
                yield FeedItem(cursor=after, kind="gap", oldest_cursor=oldest)
            async for entry_id, event in history(redis, stream_key, after):
                last = entry_id
                if event_filter.matches(event):
                    yield FeedItem(cursor=entry_id, kind="event", event=event)
        while True:
            item = await subscriber.get()
            if isinstance(item, Lagged):
                yield FeedItem(
                    cursor=item.last_delivered or last or "0-0", kind="lagged", skipped=item.skipped
                )
                continue
            entry_id, event = item  # the hub offered only events the filter wants
            if last is not None and stream_id(entry_id) <= stream_id(last):
                continue
            last = entry_id
            yield FeedItem(cursor=entry_id, kind="event", event=event)
