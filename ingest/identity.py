"""Who is this visitor? Resolve (and create, switch or merge) the contact and device of a visit.

Order, first match wins (mautic-behaviour.md section 2.2, with behaviour-decisions.md item 3):
1. the unique, publicly updatable fields of the request (email, ...) name an existing contact;
   the cookie visitor is merged into it when their unique values do not conflict (an anonymous
   visitor never conflicts), otherwise the visit switches to the named contact;
2. the device: `mautic_device_id` cookie or parameter -> its contact;
3. the `mtc_id` cookie -> that contact, or the survivor it was merged into;
4. the last contact seen from this IP, only with CM_TRACK_BY_IP and only when the request names
   no unique field (an IP is a guess: it never causes a merge);
5. a new anonymous contact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contact_monitor.activity import Activity
from contact_monitor.storage import Storage
from ingest.useragent import UserAgent

Document = dict[str, Any]


@dataclass
class Visitor:
    """The outcome of identification: the contact and (when it belongs to it) the device."""

    contact: Document
    device: Document | None
    created: bool = False
    activities: list[Activity] = field(default_factory=list)


def _by_alias(keys: Iterable[str]) -> dict[str, str]:
    return dict(key.split(":", 1) for key in keys)


def conflicts(held: Iterable[str], wanted: Iterable[str]) -> bool:
    """True when both sides hold a value for the same unique field and the values differ."""
    mine, theirs = _by_alias(held), _by_alias(wanted)
    return any(alias in theirs and theirs[alias] != value for alias, value in mine.items())


class IdentityResolver:
    def __init__(self, storage: Storage, *, track_by_ip: bool) -> None:
        self.storage = storage
        self.track_by_ip = track_by_ip

    async def current(
        self, tracking_id: str | None, contact_cookie: str | None, ip: str | None
    ) -> tuple[Document | None, Document | None]:
        """The visitor the cookies (or, optionally, the IP) point at, and their device."""
        contacts = self.storage.contacts
        if tracking_id:
            device = await self.storage.devices.get(tracking_id)
            if device is not None:
                contact = await contacts.resolve(device["contact_id"])
                if contact is not None:
                    return contact, device if contact["_id"] == device["contact_id"] else None
        if contact_cookie and len(contact_cookie) <= 64:
            contact = await contacts.resolve(contact_cookie)
            if contact is not None:
                return contact, None
        return None, None

    async def by_ip(self, ip: str | None) -> Document | None:
        """Mautic's "identify visitors by IP" (CM_TRACK_BY_IP): a guess, never grounds for a merge."""
        if not self.track_by_ip or not ip:
            return None
        return await self.storage.contacts.latest_by_ip(ip)

    async def resolve(
        self,
        *,
        now: dt.datetime,
        tracking_id: str | None,
        contact_cookie: str | None,
        ip: str | None,
        unique_keys: list[str],
    ) -> Visitor:
        current, device = await self.current(tracking_id, contact_cookie, ip)
        activities: list[Activity] = []
        if current is None and not unique_keys:
            current = await self.by_ip(ip)
        contact: Document | None = current
        if unique_keys:
            known = await self.storage.contacts.find_by_unique(unique_keys)
            if known is not None and (current is None or known["_id"] == current["_id"]):
                contact = known
            elif known is not None and current is not None:
                if conflicts(current.get("ids", []), known.get("ids", [])):
                    contact, device = known, None  # someone else on this browser: switch, keep both
                else:
                    contact = await self.merge(winner=known, loser=current, now=now, activities=activities)
                    if device is not None:
                        device = {**device, "contact_id": contact["_id"]}
            elif current is not None and conflicts(current.get("ids", []), unique_keys):
                # The visitor is known under another email: a new contact, rather than overwriting it.
                contact, device = None, None
        created = contact is None
        if contact is None:
            contact = await self.storage.contacts.create(now, ip)
            activities.append(Activity("contact_created", contact["_id"], now))
        if device is not None and device["contact_id"] != contact["_id"]:
            device = None
        return Visitor(contact, device, created, activities)

    async def merge(
        self, *, winner: Document, loser: Document, now: dt.datetime, activities: list[Activity]
    ) -> Document:
        """Move the loser's history to the winner and keep the loser's id resolving to it.

        Ordered so that an interruption leaves every id resolvable: the merge record first, then
        the moves, then the loser is deleted.
        """
        storage = self.storage
        await storage.contacts.record_merge(loser["_id"], winner["_id"], now)
        devices = await storage.devices.move(loser["_id"], winner["_id"])
        hits = await storage.hits.move(loser["_id"], winner["_id"])
        await storage.activities.move(loser["_id"], winner["_id"])
        merged = await storage.contacts.absorb(winner, loser, now)
        await storage.contacts.delete(loser["_id"])
        if loser.get("ids"):  # only now: the unique index allowed one holder per key
            await storage.contacts.adopt_ids(winner["_id"], loser["ids"])
        await storage.audit.log(
            "merge",
            now,
            {
                "winner_id": winner["_id"],
                "loser_id": loser["_id"],
                "hits_moved": hits,
                "devices_moved": devices,
            },
        )
        activities.append(
            Activity(
                "contact_merged",
                winner["_id"],
                now,
                {"merged_id": loser["_id"], "hits_moved": hits, "devices_moved": devices},
            )
        )
        return merged if merged is not None else winner

    async def device_for(
        self,
        contact: Document,
        user_agent: UserAgent,
        fingerprint: Mapping[str, object],
        now: dt.datetime,
        *,
        new_contact: bool,
    ) -> Document:
        """A device of this contact for this browser: a similar existing one, or a new one."""
        ua = user_agent.as_document()
        if not new_contact:
            similar = await self.storage.devices.find_similar(contact["_id"], ua)
            if similar is not None:
                return similar
        return await self.storage.devices.create(contact["_id"], now, ua, fingerprint)
