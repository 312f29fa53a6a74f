"""The `fields` collection: the contact field registry.

    _id                 alias (lower-case, [a-z][a-z0-9_]*)
    label, type, publicly_updatable, unique, core, max_length, created_at, updated_at

The core installs Mautic's core fields on start-up with nothing publicly updatable; operators
change flags with `contact-monitor fields update` or the `updateField` mutation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.documents import Document

FieldType = Literal[
    "text", "email", "number", "boolean", "date", "datetime", "url", "tel", "timezone", "locale", "country"
]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
DEFAULT_MAX_LENGTH = 191


@dataclass(frozen=True, slots=True)
class FieldDefinition:
    alias: str
    label: str
    type: FieldType = "text"
    publicly_updatable: bool = False
    unique: bool = False
    core: bool = False
    max_length: int = DEFAULT_MAX_LENGTH


def _definition(doc: Document) -> FieldDefinition:
    return FieldDefinition(
        alias=doc["_id"],
        label=doc.get("label") or doc["_id"],
        type=doc.get("type", "text"),
        publicly_updatable=bool(doc.get("publicly_updatable")),
        unique=bool(doc.get("unique")),
        core=bool(doc.get("core")),
        max_length=int(doc.get("max_length") or DEFAULT_MAX_LENGTH),
    )


class FieldRepository:
    """Stores definitions as given: the core (`contact_monitor.core.fields`) validates them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.fields = db["fields"]

    async def create_indexes(self) -> None:
        """`_id` is the only lookup path."""

    async def install(self, definitions: Iterable[FieldDefinition]) -> None:
        """Add these definitions where missing; existing documents (and their flags) stay as they are."""
        now = dt.datetime.now(dt.UTC)
        for definition in definitions:
            document = dataclasses.asdict(definition)
            alias = document.pop("alias")
            await self.fields.update_one(
                {"_id": alias},
                {"$setOnInsert": {**document, "created_at": now, "updated_at": now}},
                upsert=True,
            )

    async def all(self) -> list[FieldDefinition]:
        return [_definition(doc) async for doc in self.fields.find().sort("_id", 1)]

    async def get(self, alias: str) -> FieldDefinition | None:
        doc = await self.fields.find_one({"_id": alias})
        return None if doc is None else _definition(doc)

    async def create(self, definition: FieldDefinition) -> FieldDefinition:
        """`DuplicateKeyError` when the alias exists."""
        now = dt.datetime.now(dt.UTC)
        document = dataclasses.asdict(definition)
        document["_id"] = document.pop("alias")
        await self.fields.insert_one({**document, "created_at": now, "updated_at": now})
        return definition

    async def update(self, alias: str, values: Mapping[str, object]) -> FieldDefinition | None:
        """None when there is no such field."""
        doc = await self.fields.find_one_and_update(
            {"_id": alias},
            {"$set": {**values, "updated_at": dt.datetime.now(dt.UTC)}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _definition(doc)
