"""The `activities` collection: the timeline entries that are not page hits.

    _id, contact_id, type (contact_created, contact_identified, contact_merged, tags_changed,
    fields_updated, form_submitted, custom_activity), occurred_at, data {type-specific}

Page hits live in `hits` and UTM records in `utm_records`; the timeline merges the three.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]


class ActivityRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.activities = db["activities"]

    async def create_indexes(self) -> None:
        await self.activities.create_index(
            [("contact_id", ASCENDING), ("occurred_at", DESCENDING), ("_id", DESCENDING)]
        )

    async def insert_many(self, documents: Sequence[Mapping[str, Any]]) -> None:
        if documents:
            await self.activities.insert_many([dict(d) for d in documents])

    async def for_contact(
        self,
        contact_id: str,
        *,
        types: Iterable[str] | None,
        before: tuple[dt.datetime, Any] | None,
        limit: int,
    ) -> list[Document]:
        query: Document = {"contact_id": contact_id}
        if types is not None:
            query["type"] = {"$in": list(types)}
        if before is not None:
            at, key = before
            query["$or"] = [{"occurred_at": {"$lt": at}}, {"occurred_at": at, "_id": {"$lt": key}}]
        cursor = (
            self.activities.find(query).sort([("occurred_at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        )
        return [doc async for doc in cursor]

    async def move(self, from_contact: str, to_contact: str) -> None:
        await self.activities.update_many({"contact_id": from_contact}, {"$set": {"contact_id": to_contact}})

    async def delete_for_contact(self, contact_id: str) -> int:
        return (await self.activities.delete_many({"contact_id": contact_id})).deleted_count
