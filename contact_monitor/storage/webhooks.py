"""Webhooks and their deliveries: the `webhooks` and `webhook_deliveries` collections.

    webhooks            _id (ObjectId), url, types (activity kinds), secret, enabled,
                        consecutive_failures, disabled_at (when failures turned it off), created_at
    webhook_deliveries  _id "<webhook id>:<activity id>" (one delivery per event and webhook,
                        also when a stream entry is read again after a crash), webhook_id,
                        activity_id, contact_id, type, body (the stream event's JSON, sent as is), status
                        (pending | delivered | failed), attempts [{at, status_code, error,
                        duration_ms}], next_attempt_at, created_at, finished_at

Written by `contact_monitor.core.webhooks`; docs/automation.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from contact_monitor.storage.documents import Document
from contact_monitor.storage.rules import object_id

DUPLICATE_KEY = 11000


class WebhookRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.webhooks = db["webhooks"]
        self.deliveries = db["webhook_deliveries"]

    async def create_indexes(self) -> None:
        # Only deliveries waiting for an attempt are in the index `due` reads: most are
        # delivered at the first attempt and never enter it. (No index on contact_id: an
        # erasure, rare, reads the collection.)
        await self.deliveries.create_index(
            [("next_attempt_at", ASCENDING)],
            name="due",
            partialFilterExpression={"status": "pending"},
        )
        # A webhook's deliveries are listed by `_id` ("<webhook id>:<activity id>": activity ids
        # are ObjectIds, which sort by time): no index of their own.

    async def all(self) -> list[Document]:
        return [doc async for doc in self.webhooks.find().sort("_id", ASCENDING)]

    async def count(self) -> int:
        return await self.webhooks.count_documents({})

    async def get(self, webhook_id: str) -> Document | None:
        oid = object_id(webhook_id)
        return None if oid is None else await self.webhooks.find_one({"_id": oid})

    async def insert(self, webhook: Mapping[str, Any]) -> Document:
        doc = {"_id": ObjectId(), **webhook}
        await self.webhooks.insert_one(doc)
        return doc

    async def set_enabled(self, webhook_id: str, enabled: bool) -> Document | None:
        oid = object_id(webhook_id)
        if oid is None:
            return None
        change: Document = {"enabled": enabled}
        if enabled:
            change.update(consecutive_failures=0, disabled_at=None)
        result: Document | None = await self.webhooks.find_one_and_update(
            {"_id": oid}, {"$set": change}, return_document=ReturnDocument.AFTER
        )
        return result

    async def delete(self, webhook_id: str) -> bool:
        """The webhook and its deliveries (the log goes with it)."""
        oid = object_id(webhook_id)
        if oid is None:
            return False
        deleted = (await self.webhooks.delete_one({"_id": oid})).deleted_count == 1
        await self.deliveries.delete_many({"_id": {"$gt": f"{oid}:", "$lt": f"{oid};"}})
        return deleted

    async def delete_finished_before(self, moment: dt.datetime) -> int:
        """Retention: delivered and failed deliveries finished before `moment`."""
        result = await self.deliveries.delete_many({"finished_at": {"$lt": moment}})
        return int(result.deleted_count)

    async def failed_attempts(
        self, webhook_id: Any, count: int, disable_after: int, now: dt.datetime
    ) -> bool:
        """Count failed attempts in a row; True when these disabled the webhook."""
        await self.webhooks.update_one({"_id": webhook_id}, {"$inc": {"consecutive_failures": count}})
        result = await self.webhooks.update_one(
            {"_id": webhook_id, "enabled": True, "consecutive_failures": {"$gte": disable_after}},
            {"$set": {"enabled": False, "disabled_at": now}},
        )
        return result.modified_count == 1

    async def succeeded(self, webhook_id: Any) -> None:
        """The failures in a row end (no write when there were none)."""
        await self.webhooks.update_one(
            {"_id": webhook_id, "consecutive_failures": {"$gt": 0}}, {"$set": {"consecutive_failures": 0}}
        )

    async def queue(self, deliveries: Sequence[Document]) -> list[Document]:
        """Insert deliveries; those queued already (same webhook and activity) are skipped.
        Returns the ones inserted."""
        if not deliveries:
            return []
        try:
            await self.deliveries.insert_many(list(deliveries), ordered=False)
            return list(deliveries)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            skipped = {int(error["index"]) for error in errors}
            return [doc for index, doc in enumerate(deliveries) if index not in skipped]

    async def due(self, enabled: Sequence[Any], now: dt.datetime, limit: int) -> list[Document]:
        """Pending deliveries of enabled webhooks whose time has come, oldest first."""
        query = {"status": "pending", "next_attempt_at": {"$lte": now}, "webhook_id": {"$in": list(enabled)}}
        cursor = self.deliveries.find(query).sort("next_attempt_at", ASCENDING).limit(limit)
        return [doc async for doc in cursor]

    async def claim(self, delivery: Document, until: dt.datetime) -> bool:
        """Take a due delivery for one attempt (no other process attempts it before `until`)."""
        result = await self.deliveries.update_one(
            {"_id": delivery["_id"], "status": "pending", "next_attempt_at": delivery["next_attempt_at"]},
            {"$set": {"next_attempt_at": until}},
        )
        return result.modified_count == 1

    async def attempted(
        self,
        delivery_id: Any,
        attempt: Document,
        *,
        status: str,
        next_attempt_at: dt.datetime | None,
        now: dt.datetime,
    ) -> None:
        change: Document = {"status": status}
        if next_attempt_at is not None:
            change["next_attempt_at"] = next_attempt_at
        if status != "pending":
            change["finished_at"] = now
        await self.deliveries.update_one(
            {"_id": delivery_id}, {"$set": change, "$push": {"attempts": attempt}}
        )

    async def for_webhook(self, webhook_id: str, limit: int) -> list[Document]:
        oid = object_id(webhook_id)
        if oid is None:
            return []
        # Every id of this webhook's deliveries starts with "<id>:" (";" follows ":" in ASCII).
        query = {"_id": {"$gt": f"{oid}:", "$lt": f"{oid};"}}
        cursor = self.deliveries.find(query).sort("_id", DESCENDING).limit(limit)
        return [doc async for doc in cursor]

    async def delete_for_contact(self, contact_id: str) -> int:
        """Erasure: the deliveries of the contact's events (their bodies name it)."""
        return (await self.deliveries.delete_many({"contact_id": contact_id})).deleted_count
