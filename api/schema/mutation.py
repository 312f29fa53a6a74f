"""Mutation: change contacts (write role) and the field registry (admin role)."""

from __future__ import annotations

import datetime as dt

import strawberry
from strawberry.scalars import JSON

from api.permissions import ADMIN, WRITE
from api.schema import automation, forms
from api.schema.contact import Contact
from api.schema.inputs import ContactRef
from api.schema.query import field_of, form_of
from api.schema.types import CustomActivity, Field, FormType, Info
from contact_monitor.core import contacts as changes
from contact_monitor.core import fields as field_ops
from contact_monitor.core.errors import NotFound
from contact_monitor.core.invalidation import announce_field_change


async def announce(info: Info) -> None:
    services = info.context.services
    services.fields.invalidate()
    await announce_field_change(services.redis, services.settings.redis_prefix)


@strawberry.type
class Mutation:
    create_rule: automation.Rule = strawberry.mutation(
        resolver=automation.create_rule, permission_classes=ADMIN, description="Create a rule (admin)."
    )
    update_rule: automation.Rule = strawberry.mutation(
        resolver=automation.update_rule,
        permission_classes=ADMIN,
        description="Replace a rule's definition (admin); what it did stays.",
    )
    delete_rule: bool = strawberry.mutation(
        resolver=automation.delete_rule,
        permission_classes=ADMIN,
        description="Delete a rule (admin); the points and entries it gave stay.",
    )
    create_webhook: automation.Webhook = strawberry.mutation(
        resolver=automation.create_webhook, permission_classes=ADMIN, description="Create a webhook (admin)."
    )
    set_webhook_enabled: automation.Webhook = strawberry.mutation(
        resolver=automation.set_webhook_enabled,
        permission_classes=ADMIN,
        description="Turn a webhook on or off (admin); on again, its waiting deliveries are sent.",
    )
    delete_webhook: bool = strawberry.mutation(
        resolver=automation.delete_webhook, permission_classes=ADMIN, description="Delete a webhook (admin)."
    )

    @strawberry.mutation(permission_classes=ADMIN, description="Create a contact field (admin).")
    async def create_field(
        self,
        info: Info,
        alias: str,
        type: str = "text",
        label: str | None = None,
        publicly_updatable: bool = False,
        unique: bool = False,
        max_length: int = 191,
    ) -> Field:
        change = await field_ops.create_field(
            info.context.services.storage,
            alias,
            type=type,
            label=label,
            publicly_updatable=publicly_updatable,
            unique=unique,
            max_length=max_length,
        )
        await announce(info)
        return field_of(change.field)

    @strawberry.mutation(
        permission_classes=ADMIN, description="Change a field's flags, label or type (admin)."
    )
    async def update_field(
        self,
        info: Info,
        alias: str,
        publicly_updatable: bool | None = None,
        unique: bool | None = None,
        label: str | None = None,
        type: str | None = None,
    ) -> Field:
        change = await field_ops.update_field(
            info.context.services.storage,
            alias,
            publicly_updatable=publicly_updatable,
            unique=unique,
            label=label,
            type=type,
        )
        await announce(info)
        return field_of(change.field)

    create_form: FormType = strawberry.mutation(
        resolver=forms.create_form,
        permission_classes=ADMIN,
        description="Create a form for /form/submit?formId=<id> (admin). kiosk: submissions never "
        "touch the submitter's cookies or tracked contact; publishUp/publishDown: accepted only "
        "from / until then.",
    )
    update_form: FormType = strawberry.mutation(
        resolver=forms.update_form,
        permission_classes=ADMIN,
        description="Change a form (admin): what is given replaces what it had (publishUp or "
        "publishDown null: no bound); its id and submissions stay.",
    )
    delete_form: bool = strawberry.mutation(
        resolver=forms.delete_form,
        permission_classes=ADMIN,
        description="Delete a form (admin): it stops accepting submissions and leaves `forms`; "
        "its submissions stay on the timelines.",
    )

    @strawberry.mutation(
        permission_classes=ADMIN, description="Accept or refuse submissions of a form (admin)."
    )
    async def set_form_published(self, info: Info, id: int, published: bool) -> FormType:
        form = await info.context.services.storage.forms.set_published(id, published)
        if form is None:
            raise NotFound(f"no form {id}")
        return form_of(form)

    @strawberry.mutation(
        permission_classes=WRITE,
        description="Set field values ({alias: value}; null or an empty string removes one) (write).",
    )
    async def update_contact(self, info: Info, id: strawberry.ID, fields: JSON) -> Contact:
        return Contact(doc=await changes.update_fields(info.context.services, str(id), fields))  # type: ignore[arg-type]

    @strawberry.mutation(permission_classes=WRITE, description="Add and remove tags (write).")
    async def tag_contact(
        self, info: Info, id: strawberry.ID, add: list[str] | None = None, remove: list[str] | None = None
    ) -> Contact:
        return Contact(doc=await changes.tag_contact(info.context.services, str(id), add, remove))

    @strawberry.mutation(
        permission_classes=WRITE,
        description="Merge the loser into the winner; the loser's id resolves to the winner (write).",
    )
    async def merge_contacts(self, info: Info, winner_id: strawberry.ID, loser_id: strawberry.ID) -> Contact:
        return Contact(doc=await changes.merge_contacts(info.context.services, str(winner_id), str(loser_id)))

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Undo a merge (admin): the merged contact comes back as it was, with what the "
        "merge moved; activity recorded since the merge stays with the survivor. Returns it.",
    )
    async def unmerge_contact(self, info: Info, merge_id: strawberry.ID) -> Contact:
        return Contact(doc=await changes.unmerge_contact(info.context.services, str(merge_id)))

    @strawberry.mutation(
        permission_classes=WRITE,
        description="Erase a contact and all its data, stream entries included (GDPR) (write).",
    )
    async def delete_contact(self, info: Info, id: strawberry.ID) -> bool:
        return await changes.erase_contact(info.context.services, str(id))

    @strawberry.mutation(
        permission_classes=WRITE,
        description="Record other online activity (forum post, chat, code submission...) (write); "
        "`points` adds to (or takes from) the contact's points.",
    )
    async def record_activity(
        self,
        info: Info,
        contact: ContactRef,
        type: str,
        properties: JSON | None = None,
        occurred_at: dt.datetime | None = None,
        points: int | None = None,
    ) -> CustomActivity:
        contact_id = None if contact.id in (None, strawberry.UNSET) else str(contact.id)
        email = None if contact.email in (None, strawberry.UNSET) else str(contact.email)
        doc = await changes.record_activity(
            info.context.services,
            contact_id=contact_id,
            email=email,
            activity_type=type,
            properties=properties,
            occurred_at=occurred_at,
            points=points,
        )
        return CustomActivity(doc=doc)
