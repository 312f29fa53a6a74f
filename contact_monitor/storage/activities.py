"""The `activities` collection: the timeline entries that are not page hits.

    _id, contact_id, type (one of the stored activity kinds, `contact_monitor.core.activity`),
    occurred_at, data {type-specific}

Page hits live in `hits`, which are the UTM records too (plus `utm_records` written by earlier
versions); the timeline merges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.documents import (
    Cursor,
    Document,
    Session,
    moved_back,
    moved_to,
    newest_per_contact,
)


class ActivityRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.activities = db["activities"]

    async def create_indexes(self) -> None:
        await self.activities.create_index(
            [("contact_id", ASCENDING), ("occurred_at", DESCENDING), ("_id", DESCENDING)]
        )

    async def insert_many(self, documents: Sequence[Mapping[str, Any]], *, session: Session = None) -> None:
        if documents:
            await self.activities.insert_many([dict(d) for d in documents], session=session)

    async def pages_for_contacts(
        self, contact_ids: list[str], *, types: Iterable[str], before: Cursor | None, limit: int
    ) -> dict[str, list[Document]]:
        """`for_contact` for many contacts in one aggregation."""
        match: Document = {"type": {"$in": list(types)}}
        return await newest_per_contact(self.activities, contact_ids, match, "occurred_at", before, limit)

    async def move(self, from_contact: str, to_contact: str, *, session: Session = None) -> int:
        return (
            await self.activities.update_many(*moved_to(from_contact, to_contact), session=session)
        ).modified_count

    async def move_back(self, winner: str, loser: str, *, session: Session = None) -> int:
        return (await self.activities.update_many(*moved_back(winner, loser), session=session)).modified_count

    async def delete_for_contact(self, contact_id: str) -> int:
        return (await self.activities.delete_many({"contact_id": contact_id})).deleted_count
