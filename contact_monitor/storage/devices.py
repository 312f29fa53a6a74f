"""The `devices` collection: one browser or app install of a contact.

A device document:
    _id            the 23-char tracking id (`mautic_device_id` cookie, `device_id` of hits)
    contact_id, created_at, last_seen (rewritten at most once a minute, or when the user agent
                   or fingerprint change: the API reads the exact time from the newest hit)
    user_agent     parsed: raw, client_type, browser, browser_version, os, os_version,
                   device_type, brand, model
    fingerprint    latest evidence: hash, resolution, timezone_offset, platform, adblock, do_not_track
The whole data contract: docs/data-contract.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.documents import Document, Session, moved_back, moved_to
from contact_monitor.storage.ids import new_tracking_id

# `last_seen` is rewritten at most this often when nothing else about the device changes.
SEEN_RESOLUTION = dt.timedelta(seconds=60)


class DeviceRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.devices = db["devices"]  # new ones are written with their visit: Storage.store_visit

    async def create_indexes(self) -> None:
        await self.devices.create_index([("contact_id", ASCENDING)])
        await self.devices.create_index("fingerprint.hash", sparse=True)

    async def get(self, tracking_id: str) -> Document | None:
        return await self.devices.find_one({"_id": tracking_id})

    @staticmethod
    def draft(
        contact_id: str, now: dt.datetime, user_agent: Mapping[str, str], fingerprint: Mapping[str, object]
    ) -> Document:
        """A new device's document, written by the tracking path along with the visit's hit
        (`Storage.store_visit`). Tracking ids are 23 characters of 36 letters and digits: a
        collision (a DuplicateKeyError for that request) does not happen in practice."""
        return {
            "_id": new_tracking_id(),
            "contact_id": contact_id,
            "created_at": now,
            "last_seen": now,
            "user_agent": dict(user_agent),
            "fingerprint": dict(fingerprint),
        }

    async def find_similar(self, contact_id: str, user_agent: Mapping[str, str]) -> Document | None:
        """A device of this contact with the same type, brand and model (Mautic's reuse rule)."""
        return await self.devices.find_one(
            {
                "contact_id": contact_id,
                "user_agent.device_type": user_agent.get("device_type", ""),
                "user_agent.brand": user_agent.get("brand", ""),
                "user_agent.model": user_agent.get("model", ""),
                "user_agent.browser": user_agent.get("browser", ""),
            }
        )

    def visit_update(
        self,
        device: Document,
        *,
        now: dt.datetime,
        user_agent: Mapping[str, str],
        fingerprint: Mapping[str, object],
    ) -> Document | None:
        """What a visit changes on the device the caller holds, or None: only a new user agent
        or fingerprint, or a `last_seen` older than SEEN_RESOLUTION, is written (one write less
        for most page views). Pure: `seen` writes it."""
        last_seen = device.get("last_seen")
        has_fingerprint = any(value is not None for value in fingerprint.values())
        if (
            last_seen is not None
            and now - last_seen < SEEN_RESOLUTION
            and dict(user_agent) == device.get("user_agent")
            and not (has_fingerprint and dict(fingerprint) != device.get("fingerprint"))
        ):
            return None
        # Whatever made us write, the device gets what this hit says (another process may have
        # written something else since this copy was read).
        update: Document = {"user_agent": dict(user_agent)}
        if has_fingerprint:
            update["fingerprint"] = dict(fingerprint)
        update["last_seen"] = max(now, last_seen) if last_seen else now
        return update

    async def seen(self, device: Document, update: Document) -> Document:
        """Write a `visit_update`; returns the device as it is after."""
        await self.devices.update_one({"_id": device["_id"]}, {"$set": update})
        return {**device, **update}

    async def many(self, tracking_ids: list[str]) -> dict[str, Document]:
        return {doc["_id"]: doc async for doc in self.devices.find({"_id": {"$in": tracking_ids}})}

    async def for_contacts(self, contact_ids: list[str]) -> dict[str, list[Document]]:
        found: dict[str, list[Document]] = {contact_id: [] for contact_id in contact_ids}
        async for device in self.devices.find({"contact_id": {"$in": contact_ids}}).sort(
            "created_at", ASCENDING
        ):
            found.setdefault(device["contact_id"], []).append(device)
        return found

    async def contacts_with_fingerprint(self, fingerprint_hash: str, limit: int = 100) -> list[str]:
        return [
            str(c) for c in await self.devices.distinct("contact_id", {"fingerprint.hash": fingerprint_hash})
        ][:limit]

    async def delete_for_contact(self, contact_id: str) -> int:
        return (await self.devices.delete_many({"contact_id": contact_id})).deleted_count

    async def move(self, from_contact: str, to_contact: str, *, session: Session = None) -> int:
        return (
            await self.devices.update_many(*moved_to(from_contact, to_contact), session=session)
        ).modified_count

    async def move_back(self, winner: str, loser: str, *, session: Session = None) -> int:
        return (await self.devices.update_many(*moved_back(winner, loser), session=session)).modified_count
