"""GraphQL object types. Each wraps the stored document; the descriptions are the API documentation
users read in GraphiQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.scalars import JSON

from api.context import Context
from contact_monitor.core.form_html import form_html, form_script_tag
from contact_monitor.core.utm import utm_icon, utm_title
from contact_monitor.storage.documents import Document

if TYPE_CHECKING:
    from api.schema.contact import Contact

Info = strawberry.Info[Context, None]


@strawberry.type(description="Browser evidence from mtc.js. Never an identity by itself.")
class Fingerprint:
    hash: str | None = strawberry.field(description="Hash of stable browser components.")
    resolution: str | None = strawberry.field(description="Screen size, WIDTHxHEIGHT.")
    timezone_offset: int | None = strawberry.field(description="Minutes from UTC (getTimezoneOffset).")
    platform: str | None = strawberry.field(description="Windows, MacOS, UNIX, Linux or Unknown OS.")
    adblock: bool | None = strawberry.field(description="An ad blocker was detected.")
    do_not_track: bool | None = strawberry.field(description="The browser asks not to be tracked.")

    @classmethod
    def of(cls, doc: Document | None) -> Fingerprint | None:
        if not doc or not any(value is not None for value in doc.values()):
            return None
        return cls(
            hash=doc.get("hash"),
            resolution=doc.get("resolution"),
            timezone_offset=doc.get("timezone_offset"),
            platform=doc.get("platform"),
            adblock=doc.get("adblock"),
            do_not_track=doc.get("do_not_track"),
        )


@strawberry.type(description="A parsed user agent.")
class UserAgent:
    raw: str
    client_type: str = strawberry.field(description="browser, mobile app, library, ...")
    browser: str
    browser_version: str
    os: str
    os_version: str
    device_type: str = strawberry.field(description="desktop, smartphone, tablet, ...")
    brand: str
    model: str

    @classmethod
    def of(cls, doc: Document | None) -> UserAgent:
        doc = doc or {}
        return cls(
            **{
                name: str(doc.get(name) or "")
                for name in (
                    "raw",
                    "client_type",
                    "browser",
                    "browser_version",
                    "os",
                    "os_version",
                    "device_type",
                    "brand",
                    "model",
                )
            }
        )


@strawberry.type(description="UTM codes of a hit.")
class Utm:
    source: str | None
    medium: str | None
    campaign: str | None
    content: str | None
    term: str | None

    @classmethod
    def of(cls, doc: Document | None) -> Utm | None:
        if not doc:
            return None
        return cls(
            **{key: doc.get(f"utm_{key}") for key in ("source", "medium", "campaign", "content", "term")}
        )


@strawberry.type(description="A browser or app install of a contact (the mautic_device_id cookie).")
class Device:
    doc: strawberry.Private[Document]

    @strawberry.field(description="The device tracking id.")
    def tracking_id(self) -> str:
        return str(self.doc["_id"])

    @strawberry.field
    def user_agent(self) -> UserAgent:
        return UserAgent.of(self.doc.get("user_agent"))

    @strawberry.field(description="The latest fingerprint evidence sent from this device.")
    def fingerprint(self) -> Fingerprint | None:
        return Fingerprint.of(self.doc.get("fingerprint"))

    @strawberry.field
    def created_at(self) -> dt.datetime:
        return self.doc["created_at"]  # type: ignore[no-any-return]

    @strawberry.field(description="When the device was last seen: its newest hit (or visit).")
    async def last_seen(self, info: Info) -> dt.datetime:
        stored: dt.datetime = self.doc["last_seen"]
        newest = await info.context.loaders.device_last_hit.load(str(self.doc["_id"]))
        return max(stored, newest) if newest is not None else stored


@strawberry.type
class Entry:
    """What every timeline entry has: the stored document and its time."""

    doc: strawberry.Private[Document]

    @strawberry.field(description="When it happened (UTC).")
    def occurred_at(self) -> dt.datetime:
        return self.doc["occurred_at"]  # type: ignore[no-any-return]


@strawberry.type(description="A page view or app screen view.")
class PageHit(Entry):
    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.doc["_id"]))

    @strawberry.field(description="When the next hit of the same device arrived (within 30 minutes).")
    async def left_at(self, info: Info) -> dt.datetime | None:
        return await self._left_at(info)

    @strawberry.field(description="Seconds until the next hit of the same device, when known.")
    async def time_on_page(self, info: Info) -> float | None:
        left = await self._left_at(info)
        return None if left is None else round((left - self.doc["occurred_at"]).total_seconds(), 3)

    async def _left_at(self, info: Info) -> dt.datetime | None:
        """Hits are written once; the next hit of the device is looked up when read (batched for a
        page). A hit on the live feed is the newest: nothing follows it yet. Hits stored before
        time on page was derived may carry it."""
        if self.doc.get("date_left") is not None or self.doc.get("live"):
            return self.doc.get("date_left")
        device = self.doc.get("device_id")
        if not device:
            return None
        left: dt.datetime | None = await info.context.loaders.left_at.load(
            (self.doc["_id"], str(device), self.doc["occurred_at"])
        )
        return left

    @strawberry.field(description="The page URL, or the screen name an app sent.")
    def url(self) -> str:
        return str(self.doc.get("url") or "")

    @strawberry.field
    def title(self) -> str:
        return str(self.doc.get("title") or "")

    @strawberry.field
    def referrer(self) -> str:
        return str(self.doc.get("referrer") or "")

    @strawberry.field
    def language(self) -> str:
        return str(self.doc.get("language") or "")

    @strawberry.field
    def utm(self) -> Utm | None:
        return Utm.of(self.doc.get("utm"))

    @strawberry.field
    def user_agent(self) -> UserAgent:
        return UserAgent.of(self.doc.get("user_agent"))

    @strawberry.field(description="The device that sent the hit.")
    async def device(self, info: Info) -> Device | None:
        doc = await info.context.loaders.device.load(str(self.doc.get("device_id")))
        return Device(doc=doc) if doc else None

    @strawberry.field(description="The contact the hit belongs to.")
    async def contact(self, info: Info) -> Annotated[Contact, strawberry.lazy("api.schema.contact")] | None:
        from api.schema.contact import Contact

        doc = await info.context.loaders.contact.load(str(self.doc.get("contact_id")))
        return Contact(doc=doc) if doc else None

    @strawberry.field(description="The client IP (or its truncated prefix when anonymising).")
    def ip(self) -> str | None:
        return self.doc.get("ip")

    @strawberry.field
    def fingerprint(self) -> Fingerprint | None:
        return Fingerprint.of(self.doc.get("fingerprint"))

    @strawberry.field(description="Every parameter the hit carried.")
    def query(self) -> JSON:
        return JSON(self.doc.get("query") or {})


@strawberry.type(description="UTM codes recorded with a hit. Title and icon follow the user document.")
class UtmRecorded(Entry):
    @strawberry.field(description="'UTM Campaign: <campaign>', or 'UTM tags recorded'.")
    def title(self) -> str:
        return utm_title(self.doc)

    @strawberry.field(description="Font Awesome class from utm_medium (fa-envelope-o, fa-money, ...).")
    def icon(self) -> str:
        return utm_icon(self.doc)

    @strawberry.field
    def utm(self) -> Utm:
        return Utm.of(self.doc) or Utm(source=None, medium=None, campaign=None, content=None, term=None)

    @strawberry.field
    def url(self) -> str:
        return str(self.doc.get("url") or "")

    @strawberry.field
    def referrer(self) -> str:
        return str(self.doc.get("referrer") or "")


def _data(doc: Document) -> Document:
    return doc.get("data") or {}


@strawberry.type(description="Tags added to or removed from the contact.")
class TagsChanged(Entry):
    @strawberry.field
    def added(self) -> list[str]:
        return list(_data(self.doc).get("added", []))

    @strawberry.field
    def removed(self) -> list[str]:
        return list(_data(self.doc).get("removed", []))


@strawberry.type(description="Contact field values that changed.")
class FieldsUpdated(Entry):
    @strawberry.field(description="{alias: new value}; null means the value was removed.")
    def fields(self) -> JSON:
        return JSON(_data(self.doc).get("fields", {}))


@strawberry.type(description="The contact stopped being anonymous.")
class ContactIdentified(Entry):
    @strawberry.field(description="email, firstname, lastname, company at that moment.")
    def fields(self) -> JSON:
        return JSON(_data(self.doc).get("fields", {}))


@strawberry.type(description="Another contact was merged into this one; its id now resolves here.")
class ContactMerged(Entry):
    @strawberry.field(description="The id of the contact that was merged in (it no longer exists).")
    def merged_id(self) -> strawberry.ID:
        return strawberry.ID(str(_data(self.doc).get("merged_id", "")))

    @strawberry.field
    def hits_moved(self) -> int:
        return int(_data(self.doc).get("hits_moved", 0))


@strawberry.type(description="A merge involving this contact was undone (unmergeContact).")
class ContactUnmerged(Entry):
    @strawberry.field(description="The merge that was undone (its id in `merges`).")
    def merge_id(self) -> strawberry.ID:
        return strawberry.ID(str(_data(self.doc).get("merge_id", "")))

    @strawberry.field(description="The other contact of that merge (both exist again).")
    def separated_from(self) -> strawberry.ID:
        return strawberry.ID(str(_data(self.doc).get("separated_from", "")))

    @strawberry.field
    def hits_returned(self) -> int:
        return int(_data(self.doc).get("hits_returned", 0))


@strawberry.type(
    description="One merge (tracking, form or mergeContacts): who survived, who was merged in, "
    "what moved, and whether it was undone."
)
class Merge:
    doc: strawberry.Private[Document]

    @strawberry.field(description="Pass it to unmergeContact.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.doc["_id"]))

    @strawberry.field(description="The survivor.")
    def winner_id(self) -> strawberry.ID:
        return strawberry.ID(self.doc["winner_id"])

    @strawberry.field(description="The contact merged into it.")
    def loser_id(self) -> strawberry.ID:
        return strawberry.ID(self.doc["loser_id"])

    @strawberry.field
    def merged_at(self) -> dt.datetime:
        return self.doc["merged_at"]  # type: ignore[no-any-return]

    @strawberry.field(description="When it was undone; null while it stands.")
    def undone_at(self) -> dt.datetime | None:
        return self.doc.get("undone_at")

    @strawberry.field(description="The merged contact's field values as they were.")
    def loser_fields(self) -> JSON:
        return JSON(self.doc.get("loser", {}).get("fields", {}))

    @strawberry.field(description="The merged contact's tags as they were.")
    def loser_tags(self) -> list[str]:
        return list(self.doc.get("loser", {}).get("tags", []))

    @strawberry.field
    def hits_moved(self) -> int:
        return int(self.doc.get("moved", {}).get("hits", 0))

    @strawberry.field
    def devices_moved(self) -> int:
        return int(self.doc.get("moved", {}).get("devices", 0))

    @strawberry.field
    def activities_moved(self) -> int:
        return int(self.doc.get("moved", {}).get("activities", 0))


@strawberry.type(description="A submission of a form to /form/submit.")
class FormSubmitted(Entry):
    @strawberry.field
    def form_id(self) -> int:
        return int(_data(self.doc).get("form_id", 0))

    @strawberry.field
    def form_name(self) -> str:
        return str(_data(self.doc).get("form_name", ""))

    @strawberry.field(description="The submitted values, by form field name.")
    def values(self) -> JSON:
        return JSON(_data(self.doc).get("values", {}))


@strawberry.type(
    description="Activity recorded through recordActivity: forum posts, chat, code submissions..."
)
class CustomActivity(Entry):
    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.doc["_id"]))

    @strawberry.field(description="The caller's activity type, e.g. forum_post.")
    def type(self) -> str:
        return str(_data(self.doc).get("activity_type", ""))

    @strawberry.field
    def properties(self) -> JSON:
        return JSON(_data(self.doc).get("properties") or {})


@strawberry.type(description="The rule behind an entry, as it was named when it fired.")
class RuleRef:
    id: strawberry.ID
    name: str


def _rule(doc: Document) -> RuleRef | None:
    data = _data(doc)
    if not data.get("rule_id"):
        return None
    return RuleRef(id=strawberry.ID(str(data["rule_id"])), name=str(data.get("rule_name", "")))


INT_MAX = 2**31 - 1


def as_int(value: Any) -> int:
    """A stored integer within GraphQL Int's 32 bits (points can add up beyond them)."""
    return max(-INT_MAX - 1, min(INT_MAX, int(value)))


def _cause(doc: Document) -> strawberry.ID | None:
    cause = _data(doc).get("cause_activity_id")
    return strawberry.ID(str(cause)) if cause else None


@strawberry.type(description="Points given or taken: by a rule, or by recordActivity(points:).")
class PointsChanged(Entry):
    @strawberry.field
    def delta(self) -> int:
        return int(_data(self.doc).get("delta", 0))

    @strawberry.field(description="The contact's points right after this change.")
    def total(self) -> int:
        return as_int(_data(self.doc).get("total", 0))

    @strawberry.field(description="The rule that gave them; null for recordActivity.")
    def rule(self) -> RuleRef | None:
        return _rule(self.doc)

    @strawberry.field(description="The activity that caused it (activity_id on the stream).")
    def caused_by(self) -> strawberry.ID | None:
        return _cause(self.doc)


@strawberry.type(description="A rule fired its named trigger.")
class TriggerFired(Entry):
    @strawberry.field
    def trigger(self) -> str:
        return str(_data(self.doc).get("trigger", ""))

    @strawberry.field
    def rule(self) -> RuleRef | None:
        return _rule(self.doc)

    @strawberry.field(description="The activity that caused it (activity_id on the stream).")
    def caused_by(self) -> strawberry.ID | None:
        return _cause(self.doc)


TimelineEntry = Annotated[
    PageHit
    | UtmRecorded
    | TagsChanged
    | FieldsUpdated
    | ContactIdentified
    | ContactMerged
    | ContactUnmerged
    | FormSubmitted
    | CustomActivity
    | PointsChanged
    | TriggerFired,
    strawberry.union("TimelineEntry", description="One entry of a contact's timeline."),
]


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None

    @classmethod
    def of(cls, edges: Sequence[Any], has_next_page: bool) -> PageInfo:
        """The page info of a page of edges (each with a `cursor`)."""
        return cls(has_next_page=has_next_page, end_cursor=edges[-1].cursor if edges else None)


@strawberry.type
class TimelineEdge:
    cursor: str
    node: TimelineEntry


@strawberry.type(description="Timeline entries, newest first.")
class TimelineConnection:
    edges: list[TimelineEdge]
    page_info: PageInfo


@strawberry.type
class PageHitEdge:
    cursor: str
    node: PageHit


@strawberry.type
class PageHitConnection:
    total_count: int
    edges: list[PageHitEdge]
    page_info: PageInfo


@strawberry.type(description="A tag and how many contacts carry it.")
class Tag:
    name: str
    contact_count: int


@strawberry.type(description="A contact field of the registry.")
class Field:
    alias: str
    label: str
    type: str = strawberry.field(description="text, email, number, boolean, date, datetime, url, tel, ...")
    publicly_updatable: bool = strawberry.field(description="Tracking requests may set it.")
    unique: bool = strawberry.field(description="Identifies a contact, like email.")
    core: bool
    max_length: int


@strawberry.type(description="A field of a form; contactField maps it to a contact field.")
class FormFieldType:
    name: str
    label: str
    contact_field: str | None
    required: bool


@strawberry.type(description="A form accepted at /form/submit?formId=<id>.")
class FormType:
    id: int
    name: str
    fields: list[FormFieldType]
    post_action: str = strawberry.field(description="message, redirect or return.")
    post_action_property: str = strawberry.field(description="The message, or the redirect URL.")
    published: bool
    kiosk: bool = strawberry.field(
        description="Submissions never touch the submitter's cookies or tracked contact."
    )
    publish_up: dt.datetime | None = strawberry.field(description="Accepted from then on.")
    publish_down: dt.datetime | None = strawberry.field(description="Accepted until then.")
    status: str = strawberry.field(
        description="Whether it accepts submissions now: published, unpublished, pending (before "
        "publishUp) or expired (after publishDown)."
    )
    form: strawberry.Private[Any] = None  # the storage Form (html)

    @strawberry.field(
        description="The form's HTML to paste into a page (Mautic's \"manual copy\": its form script "
        "and its markup, with Mautic's element ids and field names), posting to CM_PUBLIC_URL, else "
        "to the address this request reached."
    )
    async def html(self, info: Info) -> str:
        services = info.context.services
        server = services.settings.public_url or str(info.context.request.base_url)
        server = server.rstrip("/")
        types = {f.alias: f.type for f in await services.storage.fields.all()}
        return form_script_tag(server) + "\n" + form_html(self.form, server, types)
