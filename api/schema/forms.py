"""Form management (admin): createForm, updateForm, deleteForm. docs/tracking-protocol.md
("Forms") says what a form's settings do to a submission."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import strawberry

from api.schema.inputs import FormFieldInput
from api.schema.query import form_of
from api.schema.types import FormType, Info
from contact_monitor.core.errors import BadUserInput, NotFound
from contact_monitor.storage.forms import FormDefinition, FormError, FormField


def _fields(fields: list[FormFieldInput]) -> tuple[FormField, ...]:
    return tuple(
        FormField(f.name, f.label or f.name.replace("_", " ").capitalize(), f.contact_field, f.required)
        for f in fields
    )


async def _aliases(info: Info) -> set[str]:
    return {f.alias for f in await info.context.services.storage.fields.all()}


async def create_form(
    info: Info,
    name: str,
    fields: list[FormFieldInput],
    post_action: str = "message",
    post_action_property: str = "Thank you!",
    kiosk: bool = False,
    publish_up: dt.datetime | None = None,
    publish_down: dt.datetime | None = None,
) -> FormType:
    definition = FormDefinition(
        name, _fields(fields), post_action, post_action_property, kiosk, publish_up, publish_down
    )
    try:
        form = await info.context.services.storage.forms.create(
            definition, contact_fields=await _aliases(info)
        )
    except FormError as exc:
        raise BadUserInput(str(exc)) from None
    return form_of(form)


async def update_form(
    info: Info,
    id: int,
    name: str | None = strawberry.UNSET,
    fields: list[FormFieldInput] | None = strawberry.UNSET,
    post_action: str | None = strawberry.UNSET,
    post_action_property: str | None = strawberry.UNSET,
    kiosk: bool | None = strawberry.UNSET,
    publish_up: dt.datetime | None = strawberry.UNSET,
    publish_down: dt.datetime | None = strawberry.UNSET,
) -> FormType:
    forms = info.context.services.storage.forms
    form = await forms.get(id)
    if form is None or form.deleted:
        raise NotFound(f"no form {id}")
    given = {
        "name": name,
        "fields": fields,
        "post_action": post_action,
        "post_action_property": post_action_property,
        "kiosk": kiosk,
    }
    for arg, value in given.items():
        if value is None:
            raise BadUserInput(f"{arg} cannot be null (leave it out to keep it)")
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not strawberry.UNSET}
    if "fields" in changes:
        changes["fields"] = _fields(fields or [])
    # The publish window: null removes a bound.
    changes.update(
        {
            k: v
            for k, v in (("publish_up", publish_up), ("publish_down", publish_down))
            if v is not strawberry.UNSET
        }
    )
    try:
        updated = await forms.update(
            id, dataclasses.replace(form.definition, **changes), contact_fields=await _aliases(info)
        )
    except FormError as exc:
        raise BadUserInput(str(exc)) from None
    if updated is None:
        raise NotFound(f"no form {id}")
    return form_of(updated)


async def delete_form(info: Info, id: int) -> bool:
    if not await info.context.services.storage.forms.delete(id):
        raise NotFound(f"no form {id}")
    return True
