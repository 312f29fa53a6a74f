"""Changing contacts through the API: fields, tags, merges, erasure, custom activities.

Every change is recorded on the timeline and appended to the activity stream, like the changes
tracking requests make.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from api.errors import BadUserInput, NotFound
from contact_monitor.activity import Activity, now_ms
from ingest.fields import IDENTIFYING_FIELDS, FieldValue, FieldValueError, unique_key, validate_value
from ingest.identity import IdentityResolver
from ingest.tags import MAX_TAG_LENGTH, MAX_TAGS_PER_REQUEST, clean_tag, tag_key

if TYPE_CHECKING:
    from contact_monitor.app import Services

Document = dict[str, Any]
ACTIVITY_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
MAX_PROPERTIES_BYTES = 16 * 1024


async def existing_contact(services: Services, contact_id: str) -> Document:
    contact = await services.storage.contacts.resolve(contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id!r}")
    return contact


async def update_fields(services: Services, contact_id: str, values: Mapping[str, Any]) -> Document:
    """Set (or, with null / "", remove) field values; all are validated before anything is written."""
    if not isinstance(values, Mapping) or not values:
        raise BadUserInput("fields must be a non-empty object of {alias: value}")
    storage = services.storage
    contact = await existing_contact(services, contact_id)
    registry = {f.alias: f for f in await storage.fields.all()}
    current = contact.get("fields", {})
    new_values: dict[str, FieldValue | None] = {}
    for alias, raw in values.items():
        definition = registry.get(alias)
        if definition is None:
            raise BadUserInput(f"no contact field {alias!r}; create it first (createField)")
        if raw is None or raw == "":
            value: FieldValue | None = None
        elif isinstance(raw, str | int | float | bool):
            try:
                value = validate_value(definition, str(raw).lower() if isinstance(raw, bool) else str(raw))
            except FieldValueError as exc:
                raise BadUserInput(f"field {alias!r}: {exc}") from None
        else:
            raise BadUserInput(f"field {alias!r}: expected a string, number or boolean")
        if current.get(alias) != value:
            new_values[alias] = value
    if not new_values:
        return contact
    now = now_ms()
    after = {**current, **{k: v for k, v in new_values.items() if v is not None}}
    for alias, value in new_values.items():
        if value is None:
            after.pop(alias, None)
    old_keys = [
        unique_key(a, current[a]) for a in new_values if registry[a].unique and current.get(a) is not None
    ]
    new_keys = [unique_key(a, v) for a, v in new_values.items() if registry[a].unique and v is not None]
    anonymous = not any(after.get(alias) for alias in IDENTIFYING_FIELDS)
    becomes_identified = contact.get("anonymous", True) and not anonymous
    set_values: dict[str, object] = {f"fields.{a}": v for a, v in new_values.items() if v is not None}
    set_values["anonymous"] = anonymous
    if becomes_identified:
        set_values["identified_at"] = now
    try:
        await storage.contacts.set_fields(
            contact["_id"],
            now=now,
            set_values=set_values,
            unset=[f"fields.{a}" for a, v in new_values.items() if v is None],
            add_ids=new_keys,
            remove_ids=old_keys,
        )
    except DuplicateKeyError:
        raise BadUserInput(
            "another contact already has this value of a unique field; merge them instead"
        ) from None
    updated = {**contact, "fields": after, "anonymous": anonymous}
    activities = []
    if becomes_identified:
        identity = {alias: after.get(alias) for alias in IDENTIFYING_FIELDS}
        activities.append(Activity("contact_identified", contact["_id"], now, {"fields": identity}))
    activities.append(Activity("fields_updated", contact["_id"], now, {"fields": new_values}))
    await services.recorder.record(activities, updated)
    return await existing_contact(services, contact["_id"])


def _clean_tags(names: list[str] | None) -> list[str]:
    cleaned = [name for name in (clean_tag(raw) for raw in names or []) if name]
    if len(cleaned) > MAX_TAGS_PER_REQUEST:
        raise BadUserInput(f"at most {MAX_TAGS_PER_REQUEST} tags at once")
    if any(len(name) > MAX_TAG_LENGTH for name in cleaned):
        raise BadUserInput(f"tags are at most {MAX_TAG_LENGTH} characters")
    return cleaned


async def tag_contact(
    services: Services, contact_id: str, add: list[str] | None, remove: list[str] | None
) -> Document:
    storage = services.storage
    contact = await existing_contact(services, contact_id)
    to_add, to_remove = _clean_tags(add), _clean_tags(remove)
    now = now_ms()
    names = await storage.tags.ensure(to_add, now) if to_add else {}
    names.update(await storage.tags.names(tag_key(t) for t in to_remove))
    held = set(contact.get("tags", []))
    removing = {tag_key(t) for t in to_remove}
    added = [
        names[tag_key(t)] for t in to_add if names[tag_key(t)] not in held and tag_key(t) not in removing
    ]
    removed = [names[k] for k in removing if k in names and names[k] in held]
    if added or removed:
        await storage.contacts.update(
            contact["_id"], now=now, ip=contact.get("last_ip"), add_tags=added, remove_tags=removed
        )
        updated = await existing_contact(services, contact["_id"])
        await services.recorder.record(
            [Activity("tags_changed", contact["_id"], now, {"added": added, "removed": removed})], updated
        )
        return updated
    return contact


async def merge_contacts(services: Services, winner_id: str, loser_id: str) -> Document:
    winner = await existing_contact(services, winner_id)
    loser = await existing_contact(services, loser_id)
    if winner["_id"] == loser["_id"]:
        raise BadUserInput("these ids are the same contact")
    activities: list[Activity] = []
    resolver = IdentityResolver(services.storage, track_by_ip=False)
    await resolver.merge(winner=winner, loser=loser, now=now_ms(), activities=activities)
    merged = await existing_contact(services, winner["_id"])
    await services.recorder.record(activities, merged)
    return merged


async def erase_contact(services: Services, contact_id: str) -> bool:
    """GDPR erasure: the contact, its hits, UTM records, devices, timeline, the merge records that
    resolved to it and its entries on the activity stream. The audit entry holds counts only."""
    storage = services.storage
    contact = await existing_contact(services, contact_id)
    key = contact["_id"]
    merged_ids = await storage.contacts.merged_into(key)
    hits, utm = await storage.hits.delete_for_contact(key)
    devices = await storage.devices.delete_for_contact(key)
    activities = await storage.activities.delete_for_contact(key)
    await storage.contacts.delete_merge_records(key)
    await storage.contacts.delete(key)
    stream_entries = await services.publisher.erase({key, *merged_ids})
    now = now_ms()
    await storage.audit.log(
        "erase",
        now,
        {
            "contact_id": key,
            "hits": hits,
            "utm_records": utm,
            "devices": devices,
            "activities": activities,
            "merged_ids": len(merged_ids),
            "stream_entries": stream_entries,
        },
    )
    await services.recorder.record([Activity("contact_deleted", key, now)], None)
    return True


async def contact_for_ref(services: Services, contact_id: str | None, email: str | None) -> Document:
    """The contact a ContactRef names; a new email creates an identified contact."""
    if contact_id is not None:
        return await existing_contact(services, contact_id)
    storage = services.storage
    definition = await storage.fields.get("email")
    if definition is None or email is None:
        raise BadUserInput("the email field does not exist")
    try:
        value = validate_value(definition, email)
    except FieldValueError as exc:
        raise BadUserInput(f"email: {exc}") from None
    if value is None:
        raise BadUserInput("email is empty")
    key = unique_key("email", value)
    found = await storage.contacts.find_by_unique([key])
    if found is not None:
        return found
    now = now_ms()
    contact = await storage.contacts.create(now, None)
    try:
        await storage.contacts.set_fields(
            contact["_id"],
            now=now,
            add_ids=[key],
            set_values={"fields.email": value, "anonymous": False, "identified_at": now},
        )
    except DuplicateKeyError:  # created by someone else a moment ago
        await storage.contacts.delete(contact["_id"])
        found = await storage.contacts.find_by_unique([key])
        if found is None:
            raise
        return found
    created = await existing_contact(services, contact["_id"])
    await services.recorder.record(
        [
            Activity("contact_created", contact["_id"], now),
            Activity("contact_identified", contact["_id"], now, {"fields": {"email": value}}),
            Activity("fields_updated", contact["_id"], now, {"fields": {"email": value}}),
        ],
        created,
    )
    return created


async def record_activity(
    services: Services,
    *,
    contact_id: str | None,
    email: str | None,
    activity_type: str,
    properties: Any,
    occurred_at: dt.datetime | None,
) -> Document:
    if not ACTIVITY_TYPE.match(activity_type):
        raise BadUserInput("type must be 1-64 letters, digits or _ . : - and start with a letter")
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise BadUserInput("properties must be a JSON object")
    if len(json.dumps(properties, default=str)) > MAX_PROPERTIES_BYTES:
        raise BadUserInput(f"properties must be at most {MAX_PROPERTIES_BYTES} bytes of JSON")
    contact = await contact_for_ref(services, contact_id, email)
    when = occurred_at or now_ms()
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    activity = Activity(
        "custom_activity", contact["_id"], when, {"activity_type": activity_type, "properties": properties}
    )
    stored = await services.recorder.record([activity], contact)
    return stored[0]
