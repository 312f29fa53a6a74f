"""The Contact type and its connection."""

from __future__ import annotations

import datetime as dt
from typing import Any

import strawberry
from strawberry.scalars import JSON

from api.schema.inputs import TimelineType
from api.schema.types import (
    ContactIdentified,
    ContactMerged,
    ContactUnmerged,
    CustomActivity,
    Device,
    FieldsUpdated,
    FormSubmitted,
    Info,
    PageHit,
    PageHitConnection,
    PageHitEdge,
    PageInfo,
    PointsChanged,
    TagsChanged,
    TimelineConnection,
    TimelineEdge,
    TriggerFired,
    UtmRecorded,
    as_int,
)
from contact_monitor.core.activity import TIMELINE_TYPES
from contact_monitor.storage.documents import Document
from resolvers.loaders import MAX_LIST
from resolvers.pagination import decode_cursor, page_size
from resolvers.timeline import cursor_of

NODE_TYPES: dict[str, Any] = {
    "page_hit": PageHit,
    "utm_recorded": UtmRecorded,
    "tags_changed": TagsChanged,
    "fields_updated": FieldsUpdated,
    "contact_identified": ContactIdentified,
    "contact_merged": ContactMerged,
    "contact_unmerged": ContactUnmerged,
    "form_submitted": FormSubmitted,
    "custom_activity": CustomActivity,
    "points_changed": PointsChanged,
    "trigger_fired": TriggerFired,
}
# Every timeline kind of the core has its GraphQL type.
assert set(NODE_TYPES) == set(TIMELINE_TYPES), set(NODE_TYPES) ^ set(TIMELINE_TYPES)


@strawberry.type(
    description="A unique value (an email) a public request gave without a valid identity_hash "
    "while CM_IDENTITY_SECRET is set: kept, not trusted, never used to identify (docs/identity.md)."
)
class IdentityClaim:
    field: str
    value: str
    claimed_at: dt.datetime


@strawberry.type(description="A person (or an anonymous visitor) and everything they did.")
class Contact:
    doc: strawberry.Private[Document]

    @strawberry.field(description="The contact id: the value of the mtc_id cookie.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.doc["_id"])

    @strawberry.field
    def email(self) -> str | None:
        value = self.doc.get("fields", {}).get("email")
        return None if value is None else str(value)

    @strawberry.field(description="True until email, first name, last name or company is known.")
    def is_anonymous(self) -> bool:
        return bool(self.doc.get("anonymous", True))

    @strawberry.field(description="All field values, {alias: value}.")
    def fields(self) -> JSON:
        return JSON(self.doc.get("fields", {}))

    @strawberry.field
    def tags(self) -> list[str]:
        return list(self.doc.get("tags", []))

    @strawberry.field(
        description="Points from rules and recordActivity (docs/automation.md); shown within GraphQL "
        "Int's range (+-2,147,483,647)."
    )
    def points(self) -> int:
        return as_int(self.doc.get("points", 0))

    @strawberry.field(description="Unverified identity claims, oldest first (the newest 20).")
    def claims(self) -> list[IdentityClaim]:
        return [
            IdentityClaim(field=claim["alias"], value=str(claim["value"]), claimed_at=claim["claimed_at"])
            for claim in self.doc.get("claims", [])
        ]

    @strawberry.field
    def created_at(self) -> dt.datetime:
        return self.doc["created_at"]  # type: ignore[no-any-return]

    @strawberry.field
    def identified_at(self) -> dt.datetime | None:
        return self.doc.get("identified_at")

    @strawberry.field
    def last_active(self) -> dt.datetime:
        return self.doc["last_active"]  # type: ignore[no-any-return]

    @strawberry.field(description="Browsers and app installs, oldest first.")
    async def devices(self, info: Info) -> list[Device]:
        return [Device(doc=doc) for doc in await info.context.loaders.devices.load(self.doc["_id"])]

    @strawberry.field(description="The newest page hit.")
    async def last_hit(self, info: Info) -> PageHit | None:
        doc = await info.context.loaders.last_hit.load(self.doc["_id"])
        return PageHit(doc=doc) if doc else None

    @strawberry.field(description="Page hits, newest first.")
    async def hits(self, info: Info, first: int | None = None, after: str | None = None) -> PageHitConnection:
        size = page_size(first)
        loaders = info.context.loaders
        before = decode_cursor(after, object_id=True)
        docs = await loaders.hits.load((self.doc["_id"], (size + 1, before)))
        edges = [PageHitEdge(cursor=cursor_of(doc), node=PageHit(doc=doc)) for doc in docs[:size]]
        return PageHitConnection(
            total_count=await loaders.hit_count.load(self.doc["_id"]),
            edges=edges,
            page_info=PageInfo.of(edges, len(docs) > size),
        )

    @strawberry.field(description=f"UTM records, newest first (at most {MAX_LIST}).")
    async def utm_tags(self, info: Info) -> list[UtmRecorded]:
        docs = await info.context.loaders.utm.load((self.doc["_id"], MAX_LIST))
        return [UtmRecorded(doc=doc) for doc in docs]

    @strawberry.field(description=f"IP addresses the contact's hits came from (at most {MAX_LIST}).")
    async def ip_addresses(self, info: Info) -> list[str]:
        return await info.context.loaders.ips.load(self.doc["_id"])

    @strawberry.field(description="Everything the contact did, newest first.")
    async def timeline(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        types: list[TimelineType] | None = None,
    ) -> TimelineConnection:
        size = page_size(first)
        kinds = None if types is None else tuple(sorted({t.value for t in types}))
        before = decode_cursor(after, object_id=True)
        entries, more = await info.context.loaders.timeline.load((self.doc["_id"], (size, before, kinds)))
        edges = [TimelineEdge(cursor=cursor_of(doc), node=NODE_TYPES[kind](doc=doc)) for kind, doc in entries]
        return TimelineConnection(
            edges=edges,
            page_info=PageInfo.of(edges, more),
        )


@strawberry.type
class ContactEdge:
    cursor: str
    node: Contact


@strawberry.type(description="Contacts, most recently active first.")
class ContactConnection:
    total_count: int
    edges: list[ContactEdge]
    page_info: PageInfo
