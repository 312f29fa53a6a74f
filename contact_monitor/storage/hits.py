"""The `hits` collection (page hits and screen views) and `utm_records`.

A hit document (the data contract operators query for BI and backups):
    _id, occurred_at, date_left (set by the device's next hit within 30 minutes), time_on_page (s)
    contact_id, device_id (tracking id)
    url, title, referrer, language, browser_languages
    user_agent {raw, client_type, browser, browser_version, os, os_version, device_type, brand, model}
    ip (or truncated / null when anonymising)
    utm {utm_source, utm_medium, utm_campaign, utm_content, utm_term} (only non-empty keys) or null
    fingerprint {hash, resolution, timezone_offset, platform, adblock, do_not_track}
    timezone, counter, endpoint ("pixel" | "event"), clickthrough, query (the received parameters)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]
TIME_ON_PAGE_WINDOW = dt.timedelta(minutes=30)


class HitRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.hits = db["hits"]
        self.utm_records = db["utm_records"]

    async def create_indexes(self) -> None:
        await self.hits.create_index([("contact_id", ASCENDING), ("occurred_at", DESCENDING)])
        await self.hits.create_index([("device_id", ASCENDING), ("occurred_at", DESCENDING)])
        await self.hits.create_index([("occurred_at", DESCENDING)])
        await self.utm_records.create_index([("contact_id", ASCENDING), ("occurred_at", DESCENDING)])

    async def insert(self, hit: Document) -> Any:
        result = await self.hits.insert_one(hit)
        return result.inserted_id

    async def set_left(self, hit_id: Any, hit_at: dt.datetime, left_at: dt.datetime) -> bool:
        """Close the previous hit of a device if it is recent enough and still open."""
        if left_at - hit_at > TIME_ON_PAGE_WINDOW or left_at < hit_at:
            return False
        seconds = round((left_at - hit_at).total_seconds(), 3)
        result = await self.hits.update_one(
            {"_id": hit_id, "date_left": None},
            {"$set": {"date_left": left_at, "time_on_page": seconds}},
        )
        return result.modified_count == 1

    async def insert_utm(self, record: Document) -> None:
        await self.utm_records.insert_one(record)

    async def move(self, from_contact: str, to_contact: str) -> int:
        moved = await self.hits.update_many(
            {"contact_id": from_contact}, {"$set": {"contact_id": to_contact}}
        )
        await self.utm_records.update_many({"contact_id": from_contact}, {"$set": {"contact_id": to_contact}})
        return moved.modified_count
