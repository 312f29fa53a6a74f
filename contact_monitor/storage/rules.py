"""Rules and their gates: the `rules` and `rule_gates` collections.

    rules         _id (ObjectId), name, on (an activity kind), conditions {url_matches, form_id,
                  custom_type, tag, utm_source, utm_medium, utm_campaign} (only those set),
                  actions {points, add_tags, remove_tags, trigger} (only those set),
                  frequency (every_time | once | once_per_period), period_seconds, created_at,
                  updated_at
    rule_gates    _id "<rule id>:<contact id>", rule_id, contact_id, open_from (the first time
                  the rule may fire for the contact again; far in the future for `once`)

What a rule did is on the timeline (`activities`: points_changed, tags_changed, trigger_fired,
with ids derived from the rule and the activity that caused them, so that a firing is written
once). Written by `contact_monitor.core.rules`; docs/automation.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.documents import Document, Session


def object_id(value: str) -> ObjectId | None:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


class RuleRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.rules = db["rules"]
        self.gates = db["rule_gates"]

    async def create_indexes(self) -> None:
        await self.rules.create_index([("created_at", ASCENDING)])
        await self.gates.create_index([("rule_id", ASCENDING)])
        await self.gates.create_index([("contact_id", ASCENDING)])

    async def all(self) -> list[Document]:
        return [doc async for doc in self.rules.find().sort([("created_at", ASCENDING), ("_id", ASCENDING)])]

    async def count(self) -> int:
        return await self.rules.count_documents({})

    async def insert(self, rule: Mapping[str, Any]) -> Document:
        doc = {"_id": ObjectId(), **rule}
        await self.rules.insert_one(doc)
        return doc

    async def replace(self, rule_id: str, rule: Mapping[str, Any]) -> Document | None:
        oid = object_id(rule_id)
        if oid is None:
            return None
        current = await self.rules.find_one({"_id": oid})
        if current is None:
            return None
        doc = {"_id": oid, "created_at": current["created_at"], **rule}
        result = await self.rules.replace_one({"_id": oid}, doc)
        return doc if result.matched_count else None

    async def delete(self, rule_id: str) -> bool:
        """The rule goes; what it did (points, timeline entries) stays."""
        oid = object_id(rule_id)
        if oid is None:
            return False
        deleted = (await self.rules.delete_one({"_id": oid})).deleted_count == 1
        if deleted:
            await self.gates.delete_many({"rule_id": str(oid)})
        return deleted

    async def pass_gate(
        self, rule_id: str, contact_id: str, at: dt.datetime, reopens: dt.datetime, *, session: Session = None
    ) -> None:
        """Close the rule's gate for the contact until `reopens`, if it is open at `at`:
        `DuplicateKeyError` when it is closed (the upsert finds the gate but not an open one)."""
        await self.gates.update_one(
            {"_id": f"{rule_id}:{contact_id}", "open_from": {"$lte": at}},
            {"$set": {"open_from": reopens}, "$setOnInsert": {"rule_id": rule_id, "contact_id": contact_id}},
            upsert=True,
            session=session,
        )

    async def gates_of(
        self, keys: Sequence[tuple[str, str]], *, session: Session = None
    ) -> dict[tuple[str, str], dt.datetime]:
        """(rule id, contact id) -> when the gate opens, for the gates that exist."""
        if not keys:
            return {}
        query = {"_id": {"$in": [f"{rule}:{contact}" for rule, contact in keys]}}
        return {
            (doc["rule_id"], doc["contact_id"]): doc["open_from"]
            async for doc in self.gates.find(query, session=session)
        }

    async def delete_for_contact(self, contact_id: str) -> int:
        """Erasure: the contact's gates (its rules' entries are timeline entries, erased with it)."""
        return (await self.gates.delete_many({"contact_id": contact_id})).deleted_count
