"""The `forms` collection: forms that `/form/submit?formId=N` accepts.

    _id (int form id), name, fields [{name, label, contact_field, required}], post_action
    (message | redirect | return), post_action_property, published, created_at

Submissions are timeline entries (`activities`, type form_submitted).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.documents import Document

PostAction = Literal["message", "redirect", "return"]
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_FORM_FIELDS = 50


class FormError(ValueError):
    """A form cannot be created as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    label: str
    contact_field: str | None = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class Form:
    id: int
    name: str
    fields: tuple[FormField, ...]
    post_action: PostAction = "message"
    post_action_property: str = "Thank you!"
    published: bool = True


def _form(doc: Document) -> Form:
    return Form(
        id=int(doc["_id"]),
        name=doc["name"],
        fields=tuple(FormField(**f) for f in doc.get("fields", [])),
        post_action=doc.get("post_action", "message"),
        post_action_property=doc.get("post_action_property", ""),
        published=bool(doc.get("published", True)),
    )


class FormRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.forms = db["forms"]
        self.counters = db["counters"]

    async def create_indexes(self) -> None:
        """`_id` is the only lookup path."""

    async def create(
        self,
        name: str,
        fields: Sequence[FormField],
        *,
        contact_fields: set[str],
        post_action: str = "message",
        post_action_property: str = "Thank you!",
    ) -> Form:
        if not name.strip() or len(name) > 191:
            raise FormError("a form needs a name of 1-191 characters")
        if not fields or len(fields) > MAX_FORM_FIELDS:
            raise FormError(f"a form needs 1-{MAX_FORM_FIELDS} fields")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise FormError("form field names must be unique")
        for f in fields:
            if not FIELD_NAME.match(f.name):
                raise FormError(f"invalid form field name {f.name!r}: lower-case letters, digits and _")
            if f.contact_field is not None and f.contact_field not in contact_fields:
                raise FormError(f"form field {f.name!r} maps to unknown contact field {f.contact_field!r}")
        if post_action not in ("message", "redirect", "return"):
            raise FormError("postAction must be message, redirect or return")
        if post_action == "redirect" and not re.match(r"^https?://", post_action_property):
            raise FormError("a redirect form needs an http(s) URL as postActionProperty")
        counter = await self.counters.find_one_and_update(
            {"_id": "forms"}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert counter is not None  # an upsert returning the document after it always finds one
        form = Form(
            int(counter["value"]),
            name.strip(),
            tuple(fields),
            post_action,  # type: ignore[arg-type]
            post_action_property,
        )
        document = {
            "_id": form.id,
            "name": form.name,
            "fields": [asdict(f) for f in form.fields],
            "post_action": form.post_action,
            "post_action_property": form.post_action_property,
            "published": True,
            "created_at": dt.datetime.now(dt.UTC),
        }
        await self.forms.insert_one(document)
        return form

    async def get(self, form_id: int) -> Form | None:
        doc = await self.forms.find_one({"_id": form_id})
        return None if doc is None else _form(doc)

    async def all(self) -> list[Form]:
        return [_form(doc) async for doc in self.forms.find().sort("_id", 1)]

    async def set_published(self, form_id: int, published: bool) -> Form | None:
        await self.forms.update_one({"_id": form_id}, {"$set": {"published": published}})
        return await self.get(form_id)
