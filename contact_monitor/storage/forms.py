"""The `forms` collection: forms that `/form/submit?formId=N` accepts.

    _id (int form id), name, fields [{name, label, contact_field, required}], post_action
    (message | redirect | return), post_action_property, published, created_at, updated_at,
    kiosk (submissions never touch the submitter's cookies or tracked contact), publish_up,
    publish_down (accepted only between them, either may be missing), deleted_at (a deleted form
    accepts nothing and is not listed; its submissions stay)

Submissions are timeline entries (`activities`, type form_submitted).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Literal

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.documents import Document

PostAction = Literal["message", "redirect", "return"]
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_FORM_FIELDS = 50
MAX_PROPERTY = 2000  # characters of the success message or redirect URL
Status = Literal["published", "unpublished", "pending", "expired", "deleted"]


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
    kiosk: bool = False
    publish_up: dt.datetime | None = None
    publish_down: dt.datetime | None = None
    deleted: bool = False

    @property
    def alias(self) -> str:
        """The form's name as Mautic derives its alias (element ids `mauticform_<alias>_...`,
        `formName`): lower-case letters and digits ("form" when none are left)."""
        return re.sub(r"[^a-z0-9]", "", self.name.lower()) or "form"

    @property
    def definition(self) -> FormDefinition:
        """What createForm / updateForm set of it (updateForm replaces what is given)."""
        return FormDefinition(
            self.name,
            self.fields,
            self.post_action,
            self.post_action_property,
            self.kiosk,
            self.publish_up,
            self.publish_down,
        )

    def status(self, now: dt.datetime) -> Status:
        """Whether it accepts submissions at `now`, and if not why (Mautic's publish status)."""
        if self.deleted:
            return "deleted"
        if not self.published:
            return "unpublished"
        if self.publish_up is not None and now < self.publish_up:
            return "pending"
        if self.publish_down is not None and now >= self.publish_down:
            return "expired"
        return "published"


@dataclass(frozen=True, slots=True)
class FormDefinition:
    """What createForm and updateForm set."""

    name: str
    fields: tuple[FormField, ...]
    post_action: str = "message"
    post_action_property: str = "Thank you!"
    kiosk: bool = False
    publish_up: dt.datetime | None = None
    publish_down: dt.datetime | None = None

    def check(self, contact_fields: set[str]) -> None:
        """FormError naming the first problem."""
        if not self.name.strip() or len(self.name) > 191:
            raise FormError("a form needs a name of 1-191 characters")
        if not self.fields or len(self.fields) > MAX_FORM_FIELDS:
            raise FormError(f"a form needs 1-{MAX_FORM_FIELDS} fields")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise FormError("form field names must be unique")
        for f in self.fields:
            if not FIELD_NAME.match(f.name):
                raise FormError(f"invalid form field name {f.name!r}: lower-case letters, digits and _")
            if f.contact_field is not None and f.contact_field not in contact_fields:
                raise FormError(f"form field {f.name!r} maps to unknown contact field {f.contact_field!r}")
        if self.post_action not in ("message", "redirect", "return"):
            raise FormError("postAction must be message, redirect or return")
        if self.post_action == "redirect" and not re.match(r"^https?://", self.post_action_property):
            raise FormError("a redirect form needs an http(s) URL as postActionProperty")
        if len(self.post_action_property) > MAX_PROPERTY:
            raise FormError(f"postActionProperty must be at most {MAX_PROPERTY} characters")
        for name, when in (("publishUp", self.publish_up), ("publishDown", self.publish_down)):
            if when is not None and when.tzinfo is None:
                raise FormError(f"{name} needs a time zone (e.g. 2026-12-01T09:00:00Z)")
        if self.publish_up and self.publish_down and self.publish_down <= self.publish_up:
            raise FormError("publishDown must be after publishUp")

    def document(self) -> Document:
        return {
            "name": self.name.strip(),
            "fields": [asdict(f) for f in self.fields],
            "post_action": self.post_action,
            "post_action_property": self.post_action_property,
            "kiosk": self.kiosk,
            "publish_up": self.publish_up,
            "publish_down": self.publish_down,
        }


def _form(doc: Document) -> Form:
    return Form(
        id=int(doc["_id"]),
        name=doc["name"],
        fields=tuple(FormField(**f) for f in doc.get("fields", [])),
        post_action=doc.get("post_action", "message"),
        post_action_property=doc.get("post_action_property", ""),
        published=bool(doc.get("published", True)),
        kiosk=bool(doc.get("kiosk", False)),
        publish_up=doc.get("publish_up"),
        publish_down=doc.get("publish_down"),
        deleted=doc.get("deleted_at") is not None,
    )


class FormRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.forms = db["forms"]
        self.counters = db["counters"]

    async def create_indexes(self) -> None:
        """`_id` is the only lookup path."""

    async def create(self, definition: FormDefinition, *, contact_fields: set[str]) -> Form:
        definition.check(contact_fields)
        counter = await self.counters.find_one_and_update(
            {"_id": "forms"}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert counter is not None  # an upsert returning the document after it always finds one
        now = dt.datetime.now(dt.UTC)
        document = {
            "_id": int(counter["value"]),
            **definition.document(),
            "published": True,
            "created_at": now,
            "updated_at": now,
        }
        await self.forms.insert_one(document)
        return _form(document)

    async def update(
        self, form_id: int, definition: FormDefinition, *, contact_fields: set[str]
    ) -> Form | None:
        """The form's definition replaced (its id, published flag and submissions stay); None
        when there is no such form (or it was deleted)."""
        definition.check(contact_fields)
        await self.forms.update_one(
            {"_id": form_id, "deleted_at": None},
            {"$set": {**definition.document(), "updated_at": dt.datetime.now(dt.UTC)}},
        )
        form = await self.get(form_id)
        return None if form is None or form.deleted else form

    async def delete(self, form_id: int) -> bool:
        """The form stops accepting submissions and is no longer listed; its submissions stay on
        the timelines. False when there was no such form."""
        result = await self.forms.update_one(
            {"_id": form_id, "deleted_at": None}, {"$set": {"deleted_at": dt.datetime.now(dt.UTC)}}
        )
        return result.matched_count == 1

    async def get(self, form_id: int) -> Form | None:
        doc = await self.forms.find_one({"_id": form_id})
        return None if doc is None else _form(doc)

    async def all(self) -> list[Form]:
        """The forms not deleted."""
        return [_form(doc) async for doc in self.forms.find({"deleted_at": None}).sort("_id", 1)]

    async def set_published(self, form_id: int, published: bool) -> Form | None:
        await self.forms.update_one({"_id": form_id, "deleted_at": None}, {"$set": {"published": published}})
        form = await self.get(form_id)
        return None if form is None or form.deleted else form
