"""The `fields` collection: the contact field registry.

    _id                 alias (lower-case, [a-z][a-z0-9_]*)
    label, type, publicly_updatable, unique, core, max_length, created_at, updated_at

Core fields are installed on start-up with nothing publicly updatable (as in Mautic);
operators change flags with `contact-monitor fields update`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ingest.fields import ALIAS_PATTERN, CORE_FIELDS, FIELD_TYPES, FieldDefinition
from ingest.payload import RESERVED

Document = dict[str, Any]


class FieldError(ValueError):
    """A field cannot be created or changed as asked; the message says why."""


def _definition(doc: Document) -> FieldDefinition:
    return FieldDefinition(
        alias=doc["_id"],
        label=doc.get("label") or doc["_id"],
        type=doc.get("type", "text"),
        publicly_updatable=bool(doc.get("publicly_updatable")),
        unique=bool(doc.get("unique")),
        core=bool(doc.get("core")),
        max_length=int(doc.get("max_length") or 191),
    )


class FieldRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.fields = db["fields"]

    async def create_indexes(self) -> None:
        """Install the core fields; existing documents (and their flags) are left as they are."""
        now = dt.datetime.now(dt.UTC)
        for definition in CORE_FIELDS:
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

    async def create(
        self,
        alias: str,
        *,
        type: str = "text",
        label: str | None = None,
        publicly_updatable: bool = False,
        unique: bool = False,
        max_length: int = 191,
    ) -> FieldDefinition:
        if not ALIAS_PATTERN.match(alias):
            raise FieldError(
                f"invalid alias {alias!r}: use 1-64 lower-case letters, digits and _, starting with a letter"
            )
        if alias in RESERVED and alias not in ("fingerprint", "title", "url", "timezone"):
            raise FieldError(f"{alias!r} is a tracking parameter and cannot be a contact field")
        if type not in FIELD_TYPES:
            raise FieldError(f"unknown type {type!r}; choose one of: {', '.join(FIELD_TYPES)}")
        if not 1 <= max_length <= 4096:
            raise FieldError("max length must be between 1 and 4096")
        now = dt.datetime.now(dt.UTC)
        document = {
            "_id": alias,
            "label": label or alias.replace("_", " ").title(),
            "type": type,
            "publicly_updatable": publicly_updatable,
            "unique": unique,
            "core": False,
            "max_length": max_length,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self.fields.insert_one(document)
        except DuplicateKeyError:
            raise FieldError(f"field {alias!r} already exists") from None
        return _definition(document)

    async def update(self, alias: str, **changes: object) -> FieldDefinition:
        allowed = {"label", "type", "publicly_updatable", "unique", "max_length"}
        values = {key: value for key, value in changes.items() if value is not None}
        if unknown := set(values) - allowed:
            raise FieldError(f"cannot change {', '.join(sorted(unknown))}")
        if "type" in values and values["type"] not in FIELD_TYPES:
            raise FieldError(f"unknown type {values['type']!r}; choose one of: {', '.join(FIELD_TYPES)}")
        doc = await self.fields.find_one_and_update(
            {"_id": alias},
            {"$set": {**values, "updated_at": dt.datetime.now(dt.UTC)}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise FieldError(f"no field {alias!r}")
        return _definition(doc)
