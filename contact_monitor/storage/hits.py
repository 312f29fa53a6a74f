"""The `hits` collection (page hits and screen views), which also holds the UTM records.

A hit document (the data contract operators query for BI and backups):
    _id, occurred_at (hits are written once: time on page is derived when read, `next_times`;
    hits stored before that may still carry date_left / time_on_page)
    contact_id, device_id (tracking id)
    url, title, referrer, language, browser_languages
    user_agent {raw, client_type, browser, browser_version, os, os_version, device_type, brand, model}
    ip (or truncated / null when anonymising)
    utm {utm_source, utm_medium, utm_campaign, utm_content, utm_term} (only non-empty keys) or null
    utm_id (only with utm: the id of the hit's UtmRecorded timeline entry)
    fingerprint {hash, resolution, timezone_offset, platform, adblock, do_not_track}
    timezone, counter, endpoint ("pixel" | "event"), clickthrough, query (the received parameters)
The whole data contract: docs/data-contract.md.

A hit with UTM codes is the timeline's UtmRecorded entry too (id `utm_id`, ordered by
(occurred_at, utm_id)): nothing more is written for it. `utm_records` holds the records written
separately before that; they are still read, moved by merges and erased.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
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

TIME_ON_PAGE_WINDOW = dt.timedelta(minutes=30)
# `urlContains` looks at this many of the newest hits (docs/data-contract.md, "hits").
URL_SEARCH_HITS = 100_000


class HitRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.hits = db["hits"]  # written with their visit: Storage.store_visit
        self.utm_records = db["utm_records"]

    async def create_indexes(self) -> None:
        await self.hits.create_index([("contact_id", ASCENDING), ("occurred_at", DESCENDING)])
        await self.hits.create_index([("device_id", ASCENDING), ("occurred_at", DESCENDING)])
        # Every index costs each hit insert (~45 us of SecantusDB CPU per hit): the newest hits
        # come in `_id` order (ids are drawn when a hit is received), so the `occurred_at` index
        # of earlier versions is not made any more. It is not dropped here either: processes of
        # an earlier version may still run on it (CHANGELOG: drop it once none does).
        # The UTM records among a contact's hits, without reading the hits that have none.
        await self.hits.create_index(
            [("contact_id", ASCENDING), ("occurred_at", DESCENDING), ("utm_id", DESCENDING)],
            name="utm_records",
            partialFilterExpression={"utm_id": {"$exists": True}},
        )
        # The utmSource / utmCampaign contact filters (sparse: only hits with that UTM value).
        await self.hits.create_index([("utm.utm_source", ASCENDING)], sparse=True)
        await self.hits.create_index([("utm.utm_campaign", ASCENDING)], sparse=True)
        await self.utm_records.create_index([("contact_id", ASCENDING), ("occurred_at", DESCENDING)])

    async def next_times(self, hits: list[Document]) -> dict[Any, dt.datetime]:
        """When each hit's device sent its next hit, within TIME_ON_PAGE_WINDOW: {hit _id: time}.
        One query for a whole page of hits (the `device_id, occurred_at` index), ordered by
        (occurred_at, _id) so that two hits of the same millisecond still follow each other."""
        windows = [
            {
                "device_id": hit["device_id"],
                "occurred_at": {"$gte": hit["occurred_at"], "$lte": hit["occurred_at"] + TIME_ON_PAGE_WINDOW},
            }
            for hit in hits
            if hit.get("device_id") and hit.get("occurred_at")
        ]
        if not windows:
            return {}
        by_device: dict[str, list[tuple[dt.datetime, Any]]] = {}
        async for doc in self.hits.find({"$or": windows}, {"device_id": 1, "occurred_at": 1}):
            by_device.setdefault(doc["device_id"], []).append((doc["occurred_at"], doc["_id"]))
        for times in by_device.values():
            times.sort()
        found: dict[Any, dt.datetime] = {}
        for hit in hits:
            times = by_device.get(hit.get("device_id") or "", [])
            position = bisect.bisect_right(times, (hit["occurred_at"], hit["_id"]))
            if position < len(times) and times[position][0] - hit["occurred_at"] <= TIME_ON_PAGE_WINDOW:
                found[hit["_id"]] = times[position][0]
        return found

    async def last_times(self, device_ids: list[str]) -> dict[str, dt.datetime]:
        """The newest hit time of each device (`Device.lastSeen` is exact without a write per hit)."""
        pipeline: list[Document] = [
            {"$match": {"device_id": {"$in": device_ids}}},
            {"$sort": {"device_id": 1, "occurred_at": -1}},  # the (device_id, occurred_at) index
            {"$group": {"_id": "$device_id", "at": {"$first": "$occurred_at"}}},
        ]
        return {doc["_id"]: doc["at"] async for doc in await self.hits.aggregate(pipeline)}

    async def exists(self, hit_id: Any) -> bool:
        return await self.hits.find_one({"_id": hit_id}, {"_id": 1}) is not None

    async def pages_for_contacts(
        self, contact_ids: list[str], *, before: Cursor | None, limit: int, utm: bool = False
    ) -> dict[str, list[Document]]:
        """Each contact's hits (or UTM records), newest first, after the cursor (occurred_at, _id)
        when given: one command for a page of contacts (two for UTM records: those of the hits,
        and those written separately before)."""
        if not utm:
            return await newest_per_contact(self.hits, contact_ids, {}, "occurred_at", before, limit)
        match = {"utm_id": {"$exists": True}}
        found = await newest_per_contact(
            self.hits, contact_ids, match, "occurred_at", before, limit, "utm_id"
        )
        legacy = await newest_per_contact(self.utm_records, contact_ids, {}, "occurred_at", before, limit)
        pages: dict[str, list[Document]] = {}
        for contact_id in contact_ids:
            records = [utm_record(hit) for hit in found.get(contact_id, [])] + legacy.get(contact_id, [])
            records.sort(key=lambda doc: (doc["occurred_at"], doc["_id"]), reverse=True)
            pages[contact_id] = records[:limit]
        return pages

    async def counts_for_contacts(self, contact_ids: list[str]) -> dict[str, int]:
        pipeline: list[Document] = [
            {"$match": {"contact_id": {"$in": contact_ids}}},
            {"$group": {"_id": "$contact_id", "count": {"$sum": 1}}},
        ]
        return {doc["_id"]: int(doc["count"]) async for doc in await self.hits.aggregate(pipeline)}

    async def ips_for_contacts(self, contact_ids: list[str], limit: int = 100) -> dict[str, list[str]]:
        """The distinct IPs of each contact's hits (at most `limit` each), in one aggregation."""
        pipeline: list[Document] = [
            {"$match": {"contact_id": {"$in": contact_ids}, "ip": {"$nin": [None, ""]}}},
            {"$group": {"_id": "$contact_id", "ips": {"$addToSet": "$ip"}}},
        ]
        return {
            doc["_id"]: sorted(str(ip) for ip in doc["ips"])[:limit]
            async for doc in await self.hits.aggregate(pipeline)
        }

    async def latest_for_contacts(self, contact_ids: list[str]) -> dict[str, Document]:
        """The newest hit of each contact (one index entry each, never a whole history)."""
        pages = await self.pages_for_contacts(contact_ids, before=None, limit=1)
        return {contact_id: docs[0] for contact_id, docs in pages.items() if docs}

    async def contacts_with_url(self, fragment: str, limit: int, scan: int = URL_SEARCH_HITS) -> list[str]:
        """Contacts with a hit whose URL contains `fragment` (case-insensitive), among the newest
        `scan` hits: the work is bounded (the newest `scan` hits in `_id` order, which is the
        order they were received in, then at most `scan` documents matched), never a scan of the
        whole collection on MongoDB, and at most `limit` ids come back (no 16 MB `distinct`
        result)."""
        pattern = {"$regex": re.escape(fragment), "$options": "i"}
        pipeline: list[Document] = [
            {"$sort": {"_id": -1}},
            {"$limit": scan},
            {"$match": {"url": pattern}},
            {"$group": {"_id": "$contact_id"}},
            {"$limit": limit},
        ]
        return [str(doc["_id"]) async for doc in await self.hits.aggregate(pipeline)]

    async def contacts_with_utm(self, values: dict[str, str], limit: int) -> list[str]:
        """Contacts with a hit carrying every given `utm_*` value (at most `limit`). Every hit
        has carried its `utm` (also those whose record is in `utm_records`): the hits answer."""
        on_hits = {f"utm.{name}": value for name, value in values.items()}
        return [str(c) for c in (await self.hits.distinct("contact_id", on_hits))[:limit]]

    async def delete_for_contact(self, contact_id: str) -> tuple[int, int]:
        """Erases the contact's hits and UTM records: (hits, UTM records) deleted."""
        utm_on_hits = await self.hits.count_documents({"contact_id": contact_id, "utm_id": {"$exists": True}})
        hits = await self.hits.delete_many({"contact_id": contact_id})
        utm = await self.utm_records.delete_many({"contact_id": contact_id})
        return hits.deleted_count, utm_on_hits + utm.deleted_count

    async def move(self, from_contact: str, to_contact: str, *, session: Session = None) -> int:
        moved = await self.hits.update_many(*moved_to(from_contact, to_contact), session=session)
        await self.utm_records.update_many(*moved_to(from_contact, to_contact), session=session)
        return moved.modified_count

    async def move_back(self, winner: str, loser: str, *, session: Session = None) -> int:
        moved = await self.hits.update_many(*moved_back(winner, loser), session=session)
        await self.utm_records.update_many(*moved_back(winner, loser), session=session)
        return moved.modified_count


def utm_record(hit: Document) -> Document:
    """A hit with UTM codes as its UtmRecorded entry, in the shape of the records written
    separately before (`utm_records`)."""
    return {
        "_id": hit["utm_id"],
        "contact_id": hit["contact_id"],
        "hit_id": hit["_id"],
        "occurred_at": hit["occurred_at"],
        "url": hit.get("url"),
        "referrer": hit.get("referrer"),
        "user_agent": (hit.get("user_agent") or {}).get("raw"),
        "query": hit.get("query"),
        **(hit.get("utm") or {}),
    }
