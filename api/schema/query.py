"""Query: read contacts, tags, fields, forms and fingerprint evidence (any role: read and up)."""

from __future__ import annotations

import datetime as dt

import strawberry

from api.permissions import ADMIN, READ
from api.schema import automation, traffic
from api.schema.contact import Contact, ContactConnection, ContactEdge
from api.schema.inputs import ContactFilter, ContactOrder
from api.schema.types import Field, FormFieldType, FormType, Info, Merge, PageInfo, Tag
from contact_monitor.core import contacts as changes
from contact_monitor.core.errors import BadUserInput
from contact_monitor.core.tags import tag_key
from contact_monitor.storage.fields import FieldDefinition
from contact_monitor.storage.forms import Form
from resolvers import contacts as read
from resolvers.pagination import MAX_TAG_PAGE, TAG_PAGE, page_size


@strawberry.type
class Query:
    @strawberry.field(
        permission_classes=READ,
        description="A contact by id (the mtc_id cookie); merged ids resolve to the survivor.",
    )
    async def contact(self, info: Info, id: strawberry.ID) -> Contact | None:
        doc = await info.context.services.storage.contacts.resolve(str(id))
        return Contact(doc=doc) if doc else None

    @strawberry.field(
        permission_classes=READ,
        description="The merges a contact won or lost (also by an id merged away), newest first; "
        "undo one with unmergeContact.",
    )
    async def merges(self, info: Info, contact_id: strawberry.ID) -> list[Merge]:
        entries = await changes.merges_of(info.context.services.storage, str(contact_id))
        return [Merge(doc=entry) for entry in entries]

    @strawberry.field(
        permission_classes=READ,
        description="The contact of a device tracking id (the mautic_device_id cookie).",
    )
    async def contact_by_device(self, info: Info, tracking_id: str) -> Contact | None:
        doc = await read.contact_by_device(info.context.services.storage, tracking_id)
        return Contact(doc=doc) if doc else None

    @strawberry.field(
        permission_classes=READ,
        description="Contacts matching the filter, most recently active first (orderBy: POINTS, most "
        "points first).",
    )
    async def contacts(
        self,
        info: Info,
        filter: ContactFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        order_by: ContactOrder = ContactOrder.LAST_ACTIVE,
    ) -> ContactConnection:
        size = page_size(first)
        storage = info.context.services.storage
        f = filter or ContactFilter()
        query = await read.contact_query(
            storage,
            email=f.email,
            tag=f.tag,
            identified=f.identified,
            active_since=f.active_since,
            url_contains=f.url_contains,
            utm_source=f.utm_source,
            utm_campaign=f.utm_campaign,
            field_alias=f.field.alias if f.field else None,
            field_value=f.field.value if f.field else None,
            points_at_least=f.points_at_least,
        )
        by_points = order_by == ContactOrder.POINTS
        docs, more, total = await read.contacts_page(
            storage, query, first=size, after=after, by_points=by_points
        )
        edges = [
            ContactEdge(cursor=read.contact_cursor(doc, by_points=by_points), node=Contact(doc=doc))
            for doc in docs
        ]
        return ContactConnection(
            total_count=total,
            edges=edges,
            page_info=PageInfo.of(edges, more),
        )

    @strawberry.field(
        permission_classes=READ,
        description="Contacts whose devices sent this fingerprint: possibly one person. Evidence only.",
    )
    async def contacts_by_fingerprint(self, info: Info, hash: str) -> list[Contact]:
        return [
            Contact(doc=doc)
            for doc in await read.contacts_by_fingerprint(info.context.services.storage, hash)
        ]

    @strawberry.field(
        permission_classes=READ,
        description=f"Tags in name order (case-insensitive) with the number of contacts carrying them, "
        f"{TAG_PAGE} at a time by default (at most {MAX_TAG_PAGE}); `after`: the name of the last "
        "tag of the previous page.",
    )
    async def tags(self, info: Info, first: int | None = None, after: str | None = None) -> list[Tag]:
        size = TAG_PAGE if first is None else first
        if not 1 <= size <= MAX_TAG_PAGE:
            raise BadUserInput(f"first must be between 1 and {MAX_TAG_PAGE}, not {size}")
        storage = info.context.services.storage
        page = await storage.tags.page(None if after is None else tag_key(after), size)
        counts = await storage.contacts.tag_counts([name for _, name in page])
        return [Tag(name=name, contact_count=counts.get(name, 0)) for _, name in page]

    @strawberry.field(permission_classes=READ, description="The forms /form/submit accepts.")
    async def forms(self, info: Info) -> list[FormType]:
        return [form_of(form) for form in await info.context.services.storage.forms.all()]

    rules: list[automation.Rule] = strawberry.field(
        resolver=automation.rules, permission_classes=READ, description="The rules, oldest first."
    )
    webhooks: list[automation.Webhook] = strawberry.field(
        resolver=automation.webhooks, permission_classes=ADMIN, description="The webhooks (admin)."
    )
    webhook_deliveries: list[automation.WebhookDelivery] = strawberry.field(
        resolver=automation.webhook_deliveries,
        permission_classes=ADMIN,
        description="A webhook's deliveries, newest first, with every attempt (admin).",
    )

    viewer: traffic.Viewer = strawberry.field(
        resolver=traffic.viewer, permission_classes=READ, description="The API key of this request."
    )
    sites: list[traffic.Site] = strawberry.field(
        resolver=traffic.sites,
        permission_classes=READ,
        description="The sites the tracking endpoints heard from, most recent first, with what was "
        "recorded and what was not and why (the dashboard's Check your site).",
    )
    hits_per_minute: list[traffic.MinuteCount] = strawberry.field(
        resolver=traffic.hits_per_minute,
        permission_classes=READ,
        description=f"Hits recorded per minute, the last `minutes` (at most {traffic.MAX_MINUTES}), "
        "oldest first.",
    )

    @strawberry.field(permission_classes=READ, description="The contact field registry.")
    async def fields(self, info: Info) -> list[Field]:
        return [field_of(f) for f in await info.context.services.storage.fields.all()]


def field_of(definition: FieldDefinition) -> Field:
    return Field(
        alias=definition.alias,
        label=definition.label,
        type=definition.type,
        publicly_updatable=definition.publicly_updatable,
        unique=definition.unique,
        core=definition.core,
        max_length=definition.max_length,
    )


def form_of(form: Form) -> FormType:
    return FormType(
        id=form.id,
        name=form.name,
        fields=[
            FormFieldType(name=f.name, label=f.label, contact_field=f.contact_field, required=f.required)
            for f in form.fields
        ],
        post_action=form.post_action,
        post_action_property=form.post_action_property,
        published=form.published,
        kiosk=form.kiosk,
        publish_up=form.publish_up,
        publish_down=form.publish_down,
        status=form.status(dt.datetime.now(dt.UTC)),
        form=form,
    )
