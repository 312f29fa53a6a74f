"""The `outbox` collection: stream entries that could not be appended to Redis when they happened.

    _id (ObjectId: the order they were written in), stream (the stream key), event (the JSON),
    contacts (the contact ids the entry names: an erasure removes them from here too)

The publisher writes here while Redis is unavailable (and, to keep the order, while anything is
still waiting here), and rules write their entries here in the transaction that applies them (so
that a crash after it cannot lose them); the republisher appends them to the stream in order
once Redis answers and deletes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.documents import Document, Session


class OutboxRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.outbox = db["outbox"]

    async def create_indexes(self) -> None:
        """`_id` order is the only order read."""

    async def add(
        self, stream: str, entries: Sequence[tuple[str, list[str]]], *, session: Session = None
    ) -> None:
        """(event JSON, contact ids it names) in order."""
        if entries:
            await self.outbox.insert_many(
                [
                    {"_id": ObjectId(), "stream": stream, "event": event, "contacts": contacts}
                    for event, contacts in entries
                ],
                ordered=True,
                session=session,
            )

    async def for_contacts(self, contact_ids: Iterable[str]) -> list[Any]:
        query = {"contacts": {"$in": list(contact_ids)}}
        return [doc["_id"] async for doc in self.outbox.find(query, {"_id": 1})]

    async def oldest(self, limit: int) -> list[Document]:
        return [doc async for doc in self.outbox.find().sort("_id", 1).limit(limit)]

    async def remove(self, ids: Iterable[Any]) -> None:
        await self.outbox.delete_many({"_id": {"$in": list(ids)}})

    async def depth(self) -> int:
        return await self.outbox.count_documents({})
