"""Subscription: live activity over websockets (graphql-transport-ws), filterable and resumable."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import strawberry

from api.permissions import READ
from api.schema.inputs import ActivityType
from api.schema.types import Info, PageHit
from contact_monitor.core.errors import BadUserInput
from subscriptions.feed import FeedItem, activity_feed
from subscriptions.filters import EventFilter
from subscriptions.online import MAX_ONLINE_WINDOW, VisitorsOnline
from subscriptions.shared import current_operation, shared_feed


@strawberry.input(description="Every given condition must hold (markers always pass).")
class ActivityFilter:
    types: list[ActivityType] | None = None
    contact_id: strawberry.ID | None = None
    url_contains: str | None = strawberry.field(
        default=None, description="Page hits whose URL contains this."
    )
    identified_only: bool = False
    tag: str | None = strawberry.field(default=None, description="The contact carries this tag.")
    utm_source: str | None = None
    utm_campaign: str | None = None
    trigger: str | None = strawberry.field(
        default=None, description="TRIGGER_FIRED events of this trigger (rules' named triggers)."
    )


@strawberry.type(description="The contact an event is about, as it was then.")
class ActivityContact:
    id: strawberry.ID
    email: str | None
    is_anonymous: bool


@strawberry.type(description="One live event, or a GAP / LAGGED marker.")
class ActivityEvent:
    item: strawberry.Private[FeedItem]

    @strawberry.field(description="The stream id: pass it as `after` to resume right after this event.")
    def cursor(self) -> str:
        return self.item.cursor

    @strawberry.field
    def type(self) -> ActivityType:
        if self.item.kind != "event":
            return ActivityType(self.item.kind)
        return ActivityType(str((self.item.event or {}).get("type")))

    @strawberry.field
    def occurred_at(self) -> dt.datetime:
        raw = (self.item.event or {}).get("occurred_at")
        return _time(raw) if raw else dt.datetime.now(dt.UTC)

    @strawberry.field
    def contact(self) -> ActivityContact | None:
        event = self.item.event or {}
        summary = event.get("contact") or ({"id": event["contact_id"]} if event.get("contact_id") else None)
        if summary is None:
            return None
        return ActivityContact(
            id=strawberry.ID(summary["id"]),
            email=summary.get("email"),
            is_anonymous=summary.get("anonymous", True),
        )

    @strawberry.field(description="The page hit, for PAGE_HIT events.")
    def hit(self) -> PageHit | None:
        hit = (self.item.event or {}).get("hit")
        return PageHit(doc=_hit_document(hit)) if hit else None

    @strawberry.field(description="Extra data of the event: fields, tags added/removed, form values...")
    def data(self) -> strawberry.scalars.JSON:
        skip = {"type", "contact_id", "occurred_at", "contact", "hit"}
        return strawberry.scalars.JSON({k: v for k, v in (self.item.event or {}).items() if k not in skip})

    @strawberry.field(description="LAGGED: how many events this subscription did not receive.")
    def skipped(self) -> int | None:
        return self.item.skipped if self.item.kind == "lagged" else None

    @strawberry.field(description="GAP: the oldest cursor the stream still holds.")
    def oldest_cursor(self) -> str | None:
        return self.item.oldest_cursor


def _time(raw: str) -> dt.datetime:
    return dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))


def _hit_document(hit: dict[str, Any]) -> dict[str, Any]:
    doc = {("_id" if key == "id" else key): value for key, value in hit.items()}
    doc["live"] = True  # just published: no later hit of its device exists yet
    for key in ("occurred_at", "date_left"):
        if isinstance(doc.get(key), str):
            doc[key] = _time(doc[key])
    return doc


def _event_filter(filter: ActivityFilter | None, *, page_hits_only: bool = False) -> EventFilter:
    f = filter or ActivityFilter()
    types = None if f.types is None else {t.value for t in f.types}
    if page_hits_only:
        types = {"page_hit"}
    return EventFilter.of(
        types,
        contact_id=str(f.contact_id) if f.contact_id else None,
        url_contains=f.url_contains,
        identified_only=f.identified_only,
        tag=f.tag,
        utm_source=f.utm_source,
        utm_campaign=f.utm_campaign,
        trigger=f.trigger,
    )


async def _feed(
    info: Info, event_filter: EventFilter, after: str | None
) -> AsyncGenerator[ActivityEvent, None]:
    services = info.context.services
    make = current_operation.get()
    feeds = info.context.shared
    try:
        operation = make() if make is not None and feeds is not None else None
        if operation is not None and feeds is not None:
            # Over the websocket: executed once per event for every subscription of the same
            # operation, written to this socket by the group (subscriptions/shared.py); nothing
            # is yielded here.
            await shared_feed(
                feeds, services.redis, services.settings.stream_key, operation, event_filter, after
            )
            return
        feed = activity_feed(
            info.context.hub, services.redis, services.settings.stream_key, event_filter, after
        )
        # aclosing: a client that unsubscribes must unregister from the hub now, not at garbage collection.
        async with aclosing(feed) as items:
            async for item in items:
                info.context.forget_loaded()  # the socket's context lives for hours: read afresh
                yield ActivityEvent(item=item)
    except ValueError as exc:
        raise BadUserInput(f"invalid cursor: {exc}") from None


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=READ, description="Every activity as it happens; `after` resumes after a cursor."
    )
    async def activity(
        self, info: Info, filter: ActivityFilter | None = None, after: str | None = None
    ) -> AsyncGenerator[ActivityEvent, None]:
        async with aclosing(_feed(info, _event_filter(filter), after)) as events:
            async for event in events:
                yield event

    @strawberry.subscription(
        permission_classes=READ, description="Page hits only: the common dashboard case."
    )
    async def live_visits(
        self, info: Info, filter: ActivityFilter | None = None, after: str | None = None
    ) -> AsyncGenerator[ActivityEvent, None]:
        async with aclosing(_feed(info, _event_filter(filter, page_hits_only=True), after)) as events:
            async for event in events:
                yield event

    @strawberry.subscription(
        permission_classes=READ, description="Distinct contacts with a page hit in the last `window` seconds."
    )
    async def visitors_online(self, info: Info, window: int = 300) -> AsyncGenerator[int, None]:
        if not 1 <= window <= MAX_ONLINE_WINDOW:
            raise BadUserInput(f"window must be between 1 and {MAX_ONLINE_WINDOW} seconds")
        hub = info.context.hub
        if hub.online is None:  # the process's counter, shared by every subscriber
            services = info.context.services
            hub.online = VisitorsOnline(services.redis, services.settings.online_key)
        async with aclosing(hub.online.counts(window)) as counts:
            async for count in counts:
                yield count
