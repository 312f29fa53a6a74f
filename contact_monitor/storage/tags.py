"""The `tags` collection: one document per tag, keyed by its case-folded name.

_id         case-folded name (the match key)
name        display name: the first spelling ever seen
created_at
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from contact_monitor.storage.documents import Document

DUPLICATE_KEY = 11000


class TagRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.tags = db["tags"]

    async def create_indexes(self) -> None:
        """`_id` is the only lookup path."""

    async def ensure(self, wanted: Mapping[str, str], now: dt.datetime) -> dict[str, str]:
        """Create the missing ones of {key: display name}; return {key: display name} for all of
        them (an existing tag keeps its first spelling). Keys come from `core.tags.tag_key`."""
        if not wanted:
            return {}
        operations = [
            UpdateOne({"_id": key}, {"$setOnInsert": {"name": name, "created_at": now}}, upsert=True)
            for key, name in wanted.items()
        ]
        try:
            await self.tags.bulk_write(operations, ordered=False)
        except BulkWriteError as exc:
            # Two requests creating the same tag at once: the other one won, which is fine.
            if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                raise
        return await self.names(wanted)

    async def page(self, after_key: str | None, limit: int) -> list[tuple[str, str]]:
        """(key, display name) of up to `limit` tags in key order, after `after_key`."""
        query: Document = {} if after_key is None else {"_id": {"$gt": after_key}}
        cursor = self.tags.find(query).sort("_id", 1).limit(limit)
        return [(doc["_id"], doc["name"]) async for doc in cursor]

    async def names(self, keys: Iterable[str]) -> dict[str, str]:
        """{key: display name} for the tags that exist."""
        keys = list(keys)
        if not keys:
            return {}
        return {doc["_id"]: doc["name"] async for doc in self.tags.find({"_id": {"$in": keys}})}
