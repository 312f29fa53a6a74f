"""The order of the steps for one tracking request. This module owns it; each step is a call.

parse (routes -> payload -> hit, pure) -> policy (track at all?) -> identify (identity)
-> apply fields and tags -> store hit -> publish to the activity stream
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from contact_monitor.activity import Activity, ActivityRecorder
from contact_monitor.settings import Settings
from contact_monitor.storage import Storage
from ingest.fields import (
    IDENTIFYING_FIELDS,
    FieldDefinition,
    FieldValue,
    FieldValueError,
    is_timezone,
    timezone_from_offset,
    unique_key,
    validate_value,
)
from ingest.hit import Hit
from ingest.identity import IdentityResolver, Visitor
from ingest.tags import tag_key
from ingest.useragent import UserAgent

Document = dict[str, Any]
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


@dataclass(slots=True)
class Outcome:
    contact_id: str | None = None
    device_id: str | None = None
    hit_id: str | None = None
    warnings: list[str] = field(default_factory=list)


class FieldRegistry:
    """The field definitions, re-read from MongoDB at most every `ttl` seconds (the CLI changes them
    from another process)."""

    def __init__(self, storage: Storage, ttl: float) -> None:
        self.storage = storage
        self.ttl = ttl
        self._fields: dict[str, FieldDefinition] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> Mapping[str, FieldDefinition]:
        if time.monotonic() - self._loaded_at < self.ttl:
            return self._fields
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self.ttl:
                self._fields = {f.alias: f for f in await self.storage.fields.all()}
                self._loaded_at = time.monotonic()
        return self._fields


def submitted_fields(
    params: Mapping[str, str | list[str]], registry: Mapping[str, FieldDefinition]
) -> tuple[dict[str, FieldValue], list[str]]:
    """The valid values of publicly updatable fields; invalid ones are dropped with a warning.
    Parameter names match aliases case-insensitively; an exact lower-case name wins."""
    raw: dict[str, str | list[str]] = {}
    for key, value in params.items():
        alias = key.lower()
        definition = registry.get(alias)
        if definition is None or not definition.publicly_updatable:
            continue
        if alias not in raw or key == alias:
            raw[alias] = value
    values: dict[str, FieldValue] = {}
    warnings: list[str] = []
    for alias, value in raw.items():
        try:
            cleaned = validate_value(registry[alias], value)
        except FieldValueError as exc:
            warnings.append(f"field {alias!r} was ignored: {exc}")
            continue
        if cleaned is not None:  # empty values never overwrite data
            values[alias] = cleaned
    return values, warnings


class IngestPipeline:
    def __init__(self, settings: Settings, storage: Storage, recorder: ActivityRecorder) -> None:
        self.settings = settings
        self.storage = storage
        self.recorder = recorder
        self.registry = FieldRegistry(storage, settings.field_cache_seconds)
        self.identity = IdentityResolver(storage, track_by_ip=settings.track_by_ip)

    async def field_aliases(self) -> frozenset[str]:
        """Aliases of publicly updatable fields (they take precedence over deprecated parameters)."""
        registry = await self.registry.get()
        return frozenset(alias for alias, f in registry.items() if f.publicly_updatable)

    async def track(self, visit: Visit) -> Outcome:
        hit = visit.hit
        now = hit.occurred_at
        outcome = Outcome(warnings=list(hit.warnings))
        registry = await self.registry.get()
        if visit.values is not None:
            values = dict(visit.values)
        else:
            values, field_warnings = submitted_fields(hit.params, registry)
            outcome.warnings.extend(field_warnings)
        unique = [unique_key(alias, value) for alias, value in values.items() if registry[alias].unique]

        for attempt in range(2):
            visitor = await self.identity.resolve(
                now=now,
                tracking_id=hit.device_tracking_id,
                contact_cookie=visit.contact_cookie,
                ip=visit.ip,
                unique_keys=unique,
            )
            try:
                contact = await self.apply_changes(visitor, visit, values, registry, unique)
                break
            except DuplicateKeyError:
                # Another request gave the same email to another contact a moment ago: resolve
                # again, which now finds (and merges into) that contact.
                if visitor.created:  # the contact made for this visit was never used: drop it
                    await self.storage.contacts.delete(visitor.contact["_id"])
                if attempt:
                    raise
        activities = visitor.activities

        device = visitor.device or await self.identity.device_for(
            contact, visit.user_agent, hit.fingerprint.as_document(), now, new_contact=visitor.created
        )
        outcome.contact_id = contact["_id"]
        outcome.device_id = device["_id"]

        if visit.form is not None:
            activities.append(Activity("form_submitted", contact["_id"], now, dict(visit.form)))
        if visit.endpoint in ("pixel", "event"):
            outcome.hit_id, page_hit = await self.store_hit(visit, contact["_id"], device)
            activities.append(page_hit)
        await self.recorder.record(activities, contact)
        return outcome

    async def store_hit(self, visit: Visit, contact_id: str, device: Document) -> tuple[str, Activity]:
        """The hit, the device's visit, time on page of its previous hit, and the UTM record."""
        hit = visit.hit
        now = hit.occurred_at
        hit_id = ObjectId()
        hit_doc = self.hit_document(hit_id, visit, contact_id, device["_id"])
        writes: list[Awaitable[object]] = [
            self.storage.hits.insert(hit_doc),
            self.storage.devices.seen(
                device["_id"],
                now=now,
                user_agent=visit.user_agent.as_document(),
                fingerprint=hit.fingerprint.as_document(),
                hit_id=hit_id,
            ),
        ]
        if device.get("last_hit_id") and device.get("last_hit_at"):
            writes.append(self.storage.hits.set_left(device["last_hit_id"], device["last_hit_at"], now))
        await asyncio.gather(*writes)
        if hit.utm:
            await self.storage.hits.insert_utm(
                {
                    "contact_id": contact_id,
                    "hit_id": hit_id,
                    "occurred_at": now,
                    "url": hit.url,
                    "referrer": hit.referrer,
                    "user_agent": visit.user_agent.raw,
                    "query": hit_doc["query"],
                    **hit.utm,
                }
            )
        activity = Activity(
            "page_hit",
            contact_id,
            now,
            {"device_id": device["_id"], "hit_id": str(hit_id), "hit": public_hit(hit_doc)},
        )
        return str(hit_id), activity

    async def apply_changes(
        self,
        visitor: Visitor,
        visit: Visit,
        values: Mapping[str, FieldValue],
        registry: Mapping[str, FieldDefinition],
        unique: list[str],
    ) -> Document:
        """Fields, identity keys, tags and last activity in one contact update."""
        contact = visitor.contact
        hit = visit.hit
        now = hit.occurred_at
        current = contact.get("fields", {})
        changes = {alias: value for alias, value in values.items() if current.get(alias) != value}
        if "timezone" not in current and "timezone" not in changes:
            # As Mautic: a contact without a time zone gets the browser's (the IANA name mtc.js
            # sends, else a fixed-offset zone from timezone_offset).
            guessed = hit.timezone if hit.timezone and is_timezone(hit.timezone) else None
            if guessed is None and hit.fingerprint.timezone_offset is not None:
                guessed = timezone_from_offset(hit.fingerprint.timezone_offset)
            if guessed:
                changes["timezone"] = guessed
        set_values: dict[str, object] = {f"fields.{alias}": value for alias, value in changes.items()}
        becomes_identified = contact.get("anonymous", True) and any(
            changes.get(alias) or current.get(alias) for alias in IDENTIFYING_FIELDS
        )
        if becomes_identified:
            set_values["anonymous"] = False
            set_values["identified_at"] = now
        new_ids = [key for key in unique if key not in contact.get("ids", [])]

        added: list[str] = []
        removed: list[str] = []
        if hit.tags:
            names = await self.storage.tags.ensure(hit.tags.add, now) if hit.tags.add else {}
            if hit.tags.remove:
                names.update(await self.storage.tags.names(tag_key(t) for t in hit.tags.remove))
            held = set(contact.get("tags", []))
            added = [names[tag_key(t)] for t in hit.tags.add if names.get(tag_key(t)) not in held]
            removed = [names[k] for t in hit.tags.remove if (k := tag_key(t)) in names and names[k] in held]

        last_active = contact.get("last_active")
        nothing_new = not (set_values or new_ids or added or removed) and contact.get("last_ip") == visit.ip
        if not (nothing_new and last_active and now - last_active < LAST_ACTIVE_RESOLUTION):
            exists = await self.storage.contacts.update(
                contact["_id"],
                now=now,
                ip=visit.ip,
                set_values=set_values,
                add_ids=new_ids,
                add_tags=added,
                remove_tags=removed,
            )
            if not exists:  # deleted concurrently (merged by a parallel request): resolve again
                raise DuplicateKeyError("contact vanished during the visit")
        # The contact as the update left it, for the activities' contact summary.
        updated = {
            **contact,
            "fields": {**current, **changes},
            "anonymous": contact.get("anonymous", True) and not becomes_identified,
            "tags": [t for t in contact.get("tags", []) if t not in removed] + added,
            "last_active": max(contact.get("last_active", now), now),
        }
        activities = visitor.activities
        if becomes_identified:
            identity = {alias: updated["fields"].get(alias) for alias in IDENTIFYING_FIELDS}
            activities.append(Activity("contact_identified", contact["_id"], now, {"fields": identity}))
        if changes:
            activities.append(Activity("fields_updated", contact["_id"], now, {"fields": changes}))
        if added or removed:
            activities.append(
                Activity("tags_changed", contact["_id"], now, {"added": added, "removed": removed})
            )
        return updated

    def hit_document(self, hit_id: ObjectId, visit: Visit, contact_id: str, device_id: str) -> Document:
        hit = visit.hit
        return {
            "_id": hit_id,
            "occurred_at": hit.occurred_at,
            "date_left": None,
            "time_on_page": None,
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
        if key != "query"
    }
