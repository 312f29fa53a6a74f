"""The order of the steps for one tracking request. This module owns it; each step is a call.

parse (routes -> payload -> hit, pure) -> policy (track at all?) -> identify (identity)
-> apply fields and tags -> store hit -> publish to the activity stream
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from contact_monitor.core import contacts
from contact_monitor.core.activity import Activity
from contact_monitor.core.contacts import plan_fields
from contact_monitor.core.fields import (
    FieldValue,
    is_timezone,
    submitted_fields,
    timezone_from_offset,
)
from contact_monitor.core.identity import IdentityResolver, Visitor, verifies
from contact_monitor.core.services import Services
from contact_monitor.core.tags import diff
from contact_monitor.storage.contacts import unique_key
from contact_monitor.storage.documents import Document
from contact_monitor.storage.fields import FieldDefinition
from ingest.hit import Hit
from ingest.payload import PROOF_PARAMETERS, Params
from ingest.spool import HitSpool
from ingest.useragent import UserAgent, UserAgentParser

# A contact's `last_active` is rewritten at most this often when a hit changes nothing else: one
# write less for most page views of a visit (hits keep exact times).
LAST_ACTIVE_RESOLUTION = dt.timedelta(seconds=60)
Endpoint = Literal["pixel", "event", "mtc", "form"]


@dataclass(frozen=True, slots=True)
class Visit:
    """Everything the pipeline needs from one request, already parsed and limited."""

    endpoint: Endpoint
    hit: Hit
    user_agent: UserAgent
    ip: str | None
    contact_cookie: str | None
    # Form submissions: values of every mapped field (public or not), and the submission itself.
    values: Mapping[str, FieldValue] | None = None
    form: Mapping[str, Any] | None = None
    # Fixed at receipt for a pixel hit, also when it is spooled (so that a replay writes it once).
    hit_id: ObjectId | None = None
    # A kiosk form's submission: identified by what it submits only, never by the submitter's
    # cookies, device or IP (a shared terminal; docs/tracking-protocol.md, "Forms").
    kiosk: bool = False


@dataclass(slots=True)
class Unwritten:
    """A visit's new contact and device, drafted and not written yet (None: nothing new)."""

    contact: Document | None = None
    device: Document | None = None


@dataclass(slots=True)
class Outcome:
    contact_id: str | None = None
    device_id: str | None = None
    hit_id: str | None = None
    warnings: list[str] = field(default_factory=list)


class IngestPipeline:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.storage = services.storage
        self.identity = IdentityResolver(services.storage, track_by_ip=services.settings.track_by_ip)
        services.invalidations.device_caches.append(self.identity.devices)
        self.agents = UserAgentParser()
        self.spool = HitSpool(services.settings.data_dir / "spool")

    def close(self) -> None:
        self.agents.close()

    async def track(self, visit: Visit) -> Outcome:
        hit = visit.hit
        now = hit.occurred_at
        outcome = Outcome(warnings=list(hit.warnings))
        registry = await self.services.fields.get()
        if visit.values is not None:
            values = dict(visit.values)
        else:
            values, field_warnings = submitted_fields(hit.params, registry)
            outcome.warnings.extend(field_warnings)
        claims = self.unverified(values, registry, hit.params)
        unique = [unique_key(alias, value) for alias, value in values.items() if registry[alias].unique]

        merged: list[Activity] = []  # a merge of a first attempt is done: keep its activity
        for attempt in range(2):
            visitor = await self.identity.resolve(
                now=now,
                tracking_id=None if visit.kiosk else hit.device_tracking_id,
                contact_cookie=None if visit.kiosk else visit.contact_cookie,
                ip=None if visit.kiosk else visit.ip,
                unique_keys=unique,
                names_unique=bool(claims),
            )
            merged.extend(visitor.activities)
            notes: list[str] = []  # this attempt's warnings (a retry says them again)
            claimed, applied = self.claims_of(visitor, claims, values, notes)
            applied = await self.without_others_values(visitor, applied, registry, notes)
            try:
                contact, created, changes, drafted = await self.apply_changes(
                    visitor,
                    visit,
                    applied,
                    registry,
                    tags=not (claimed and visitor.identified),
                    draft=not claimed,
                )
                break
            except DuplicateKeyError:
                # Another request gave the same email to another contact a moment ago: resolve
                # again, which now finds (and merges into) that contact.
                if attempt:
                    raise
        outcome.warnings.extend(notes)
        activities = merged
        if created:
            activities.append(Activity("contact_created", contact["_id"], now))
        activities.extend(changes)

        # What is new is written together, in one group commit round: the contact (when no
        # unique key could refuse it), the device, the hit.
        new = Unwritten(contact=contact if drafted else None)
        device = visitor.device
        if device is None:
            device, drafted_device = await self.identity.device_for(
                contact["_id"],
                visit.user_agent.as_document(),
                hit.fingerprint.as_document(),
                now,
                new_contact=created,
            )
            new.device = device if drafted_device else None
        outcome.contact_id = contact["_id"]
        outcome.device_id = device["_id"]
        if claimed:  # the contact is written already (claims are never drafted)
            await self.storage.contacts.add_claims(contact["_id"], claimed, now)

        if visit.form is not None:
            activities.append(Activity("form_submitted", contact["_id"], now, dict(visit.form)))
        if visit.endpoint in ("pixel", "event"):
            outcome.hit_id, page_hit = await self.store_hit(visit, contact["_id"], device, new)
            activities.append(page_hit)
        else:
            await self.storage.store_visit(contact=new.contact, device=new.device)
        if new.device is not None:
            self.identity.devices.put(new.device)
        await self.services.recorder.record(activities, contact)
        return outcome

    def unverified(
        self, values: dict[str, FieldValue], registry: Mapping[str, FieldDefinition], params: Params
    ) -> dict[str, FieldValue]:
        """With CM_IDENTITY_SECRET: the unique values that `identity_hash` does not vouch for,
        taken out of `values` (they neither identify nor are written; docs/identity.md)."""
        secret = self.services.settings.identity_secret
        if secret is None:
            return {}
        raw = next((params[name] for name in PROOF_PARAMETERS if params.get(name)), None)
        proof = raw[-1] if isinstance(raw, list) else raw
        return {
            alias: values.pop(alias)
            for alias in [alias for alias, value in values.items() if registry[alias].unique]
            if not verifies(secret, unique_key(alias, values[alias]), proof)
        }

    async def without_others_values(
        self,
        visitor: Visitor,
        values: dict[str, FieldValue],
        registry: Mapping[str, FieldDefinition],
        warnings: list[str],
    ) -> dict[str, FieldValue]:
        """Unique values that other contacts hold are not written (one request naming two
        people's values: identification chose one of them, the other's value stays theirs).
        Only a request with two or more unique values can carry one: a single one either named
        the contact identification chose, or nobody."""
        keys = {unique_key(alias, value): alias for alias, value in values.items() if registry[alias].unique}
        if len(keys) < 2:
            return values
        mine = (visitor.contact or {}).get("_id")
        others = [
            keys[key] for key, holder in (await self.storage.contacts.holders(keys)).items() if holder != mine
        ]
        for alias in sorted(others):
            warnings.append(f"field {alias!r} was not applied: its value belongs to another contact")
        return {alias: value for alias, value in values.items() if alias not in others}

    @staticmethod
    def claims_of(
        visitor: Visitor, claims: Mapping[str, FieldValue], values: dict[str, FieldValue], warnings: list[str]
    ) -> tuple[dict[str, FieldValue], dict[str, FieldValue]]:
        """(the claims to keep on the visitor's contact, the values to apply). A claim of a value
        the visitor holds already is no claim. An identified visitor's contact is not changed by
        a request that makes a claim: its other values and tags are not applied either."""
        held = set((visitor.contact or {}).get("ids", []))
        claimed = {alias: value for alias, value in claims.items() if unique_key(alias, value) not in held}
        if not claimed:
            return {}, values
        names = ", ".join(sorted(claimed))
        warnings.append(
            f"{names}: not verified (identity_hash missing or wrong); kept as an unverified claim"
        )
        if visitor.identified:
            warnings.append(
                "nothing else of this request was applied: "
                "an unverified claim cannot change an identified contact"
            )
            return claimed, {}
        return claimed, values

    async def store_hit(
        self, visit: Visit, contact_id: str, device: Document, new: Unwritten
    ) -> tuple[str, Activity]:
        """The hit (written once: its time on page is derived when read; with UTM codes it is the
        UTM record too) with the visit's new contact and device, and the device's visit when
        something about a known device changed."""
        hit = visit.hit
        now = hit.occurred_at
        hit_id = visit.hit_id or ObjectId()
        hit_doc = self.hit_document(hit_id, visit, contact_id, device["_id"])
        devices = self.storage.devices
        update = None
        if new.device is None:
            update = devices.visit_update(
                device,
                now=now,
                user_agent=visit.user_agent.as_document(),
                fingerprint=hit.fingerprint.as_document(),
            )
        write = self.storage.store_visit(contact=new.contact, device=new.device, hit=hit_doc)
        if update is None:  # most page views: only the hit is written
            await write
        else:
            _, seen = await asyncio.gather(write, devices.seen(device, update))
            self.identity.devices.put(seen)
        activity = Activity(
            "page_hit",
            contact_id,
            now,
            {"device_id": device["_id"], "hit_id": str(hit_id), "hit": public_hit(hit_doc)},
            id=str(hit_id),
        )
        return str(hit_id), activity

    async def apply_changes(
        self,
        visitor: Visitor,
        visit: Visit,
        values: Mapping[str, FieldValue],
        registry: Mapping[str, FieldDefinition],
        *,
        tags: bool = True,
        draft: bool = False,
    ) -> tuple[Document, bool, list[Activity], bool]:
        """Fields, identity keys, tags and last activity: one insert for a new contact, at most
        one update for a known one. Returns the contact as it is after, whether it is new, the
        activities of the change, and whether the contact is a draft, not written yet: with
        `draft`, a new contact that no unique key can refuse is left to the caller to write
        with the visit (one group commit round for the contact, its device and its hit)."""
        hit = visit.hit
        now = hit.occurred_at
        contact = visitor.contact or {}
        current = contact.get("fields", {})
        values = dict(values)
        if "timezone" not in current and "timezone" not in values:
            # As Mautic: a contact without a time zone gets the browser's (the IANA name mtc.js
            # sends, else a fixed-offset zone from timezone_offset).
            guessed = hit.timezone if hit.timezone and is_timezone(hit.timezone) else None
            if guessed is None and hit.fingerprint.timezone_offset is not None:
                guessed = timezone_from_offset(hit.fingerprint.timezone_offset)
            if guessed:
                values["timezone"] = guessed
        change = plan_fields(contact, values, registry)
        if hit.tags and tags:
            change.added_tags, change.removed_tags = await diff(
                self.storage, contact.get("tags", []), hit.tags, now
            )
        if visitor.contact is None:
            if draft and not change.add_ids:
                drafted = contacts.draft(self.storage, change, now, visit.ip)
                return drafted, True, change.activities(drafted["_id"], now), True
            created = await contacts.create(self.storage, change, now, visit.ip)
            return created, True, change.activities(created["_id"], now), False

        last_active = contact.get("last_active")
        nothing_new = not change and contact.get("last_ip") == visit.ip
        if not (nothing_new and last_active and now - last_active < LAST_ACTIVE_RESOLUTION):
            exists = await contacts.apply(self.storage, contact, change, now, visit=(now, visit.ip))
            if not exists:  # deleted concurrently (merged by a parallel request): resolve again
                raise DuplicateKeyError("contact vanished during the visit")
        updated = change.applied_to(contact)
        updated["last_active"] = max(contact.get("last_active", now), now)
        return updated, False, change.activities(contact["_id"], now), False

    def hit_document(self, hit_id: ObjectId, visit: Visit, contact_id: str, device_id: str) -> Document:
        hit = visit.hit
        return {
            "_id": hit_id,
            "occurred_at": hit.occurred_at,
            "contact_id": contact_id,
            "device_id": device_id,
            "url": hit.url,
            "title": hit.title,
            "referrer": hit.referrer,
            "language": hit.language,
            "browser_languages": list(hit.browser_languages),
            "user_agent": visit.user_agent.as_document(),
            "ip": visit.ip,
            "utm": dict(hit.utm) or None,
            # The id of the hit's UtmRecorded timeline entry (contact_monitor/storage/hits.py).
            **({"utm_id": ObjectId()} if hit.utm else {}),
            "fingerprint": hit.fingerprint.as_document(),
            "privacy": dict(hit.privacy),
            "timezone": hit.timezone,
            "counter": hit.counter,
            "endpoint": visit.endpoint,
            "clickthrough": dict(hit.clickthrough) or None,
            "query": dict(hit.query),
        }


def public_hit(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The hit as published on the stream: the stored document, id as a string, without the raw query."""
    return {
        ("id" if key == "_id" else key): (str(value) if key == "_id" else value)
        for key, value in doc.items()
        if key not in ("query", "utm_id")
    }
