"""Changing contacts: the one field update, tag change, merge, erasure and custom activity that
tracking requests, form posts and the GraphQL mutations all call.

Every change is recorded on the timeline and appended to the activity stream.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import DuplicateKeyError

from contact_monitor.core.activity import Activity, now_ms
from contact_monitor.core.errors import BadUserInput, MergeInProgress, NotFound
from contact_monitor.core.fields import (
    IDENTIFYING_FIELDS,
    FieldValue,
    FieldValueError,
    is_identified,
    validate_value,
)
from contact_monitor.core.identity import being_merged, in_transaction, merge
from contact_monitor.core.rules import MAX_POINTS
from contact_monitor.core.services import Services
from contact_monitor.core.tags import TagChanges, diff
from contact_monitor.storage import Storage
from contact_monitor.storage.contacts import unique_key
from contact_monitor.storage.documents import Document, Session
from contact_monitor.storage.fields import FieldDefinition

ACTIVITY_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
MAX_PROPERTIES_BYTES = 16 * 1024
# recordActivity's occurredAt: from 2000 to a day ahead (clocks of integrations drift).
EARLIEST_ACTIVITY = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
MAX_CLOCK_AHEAD = dt.timedelta(days=1)


@dataclass
class ContactChange:
    """What one request changes on a contact: field values (None removes one), their unique keys,
    the anonymous flag, tags; and the activities that say so."""

    fields: dict[str, FieldValue | None] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)  # every field value once applied
    add_ids: list[str] = field(default_factory=list)
    remove_ids: list[str] = field(default_factory=list)
    anonymous: bool = True
    becomes_identified: bool = False
    added_tags: list[str] = field(default_factory=list)
    removed_tags: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.fields or self.add_ids or self.becomes_identified or self.added_tags or self.removed_tags
        )

    def set_values(self, now: dt.datetime, contact: Document) -> dict[str, object]:
        values: dict[str, object] = {f"fields.{a}": v for a, v in self.fields.items() if v is not None}
        if self.anonymous != contact.get("anonymous", True):
            values["anonymous"] = self.anonymous
        if self.becomes_identified:
            values["identified_at"] = now
        return values

    def unset(self) -> list[str]:
        return [f"fields.{alias}" for alias, value in self.fields.items() if value is None]

    def applied_to(self, contact: Document) -> Document:
        """The contact as this change leaves it (for activity summaries, without a read)."""
        held = [tag for tag in contact.get("tags", []) if tag not in self.removed_tags]
        return {**contact, "fields": self.after, "anonymous": self.anonymous, "tags": held + self.added_tags}

    def activities(self, contact_id: str, now: dt.datetime) -> list[Activity]:
        activities = []
        if self.becomes_identified:
            identity = {alias: self.after.get(alias) for alias in IDENTIFYING_FIELDS}
            activities.append(Activity("contact_identified", contact_id, now, {"fields": identity}))
        if self.fields:
            activities.append(Activity("fields_updated", contact_id, now, {"fields": dict(self.fields)}))
        if self.added_tags or self.removed_tags:
            tags = {"added": self.added_tags, "removed": self.removed_tags}
            activities.append(Activity("tags_changed", contact_id, now, tags))
        return activities


def _key_or_none(alias: str, value: FieldValue | None) -> str | None:
    return None if value is None else unique_key(alias, value)


def plan_fields(
    contact: Document, values: Mapping[str, FieldValue | None], registry: Mapping[str, FieldDefinition]
) -> ContactChange:
    """The change that gives `contact` these (already validated) values; None removes a value.
    Every given unique value the contact lacks a key for gets one; a changed unique value loses
    its old key. Identification follows docs/identity.md ("Anonymous and identified")."""
    current = contact.get("fields", {})
    changed = {alias: value for alias, value in values.items() if current.get(alias) != value}
    after = {**current, **changed}
    for alias, value in changed.items():
        if value is None:
            after.pop(alias, None)
    held = set(contact.get("ids", []))

    def unique(alias: str) -> bool:
        definition = registry.get(alias)
        return definition is not None and definition.unique

    add_ids = [
        key
        for alias, value in values.items()
        if value is not None and unique(alias) and (key := unique_key(alias, value)) not in held
    ]
    # A changed unique value loses its old key, unless the new value has the same key (a change
    # of case only: keys are case-folded).
    remove_ids = [
        old
        for alias, value in changed.items()
        if unique(alias)
        and current.get(alias) is not None
        and (old := unique_key(alias, current[alias])) != _key_or_none(alias, value)
    ]
    was_anonymous = bool(contact.get("anonymous", True))
    identified = is_identified(after)
    return ContactChange(
        fields=changed,
        after=after,
        add_ids=list(dict.fromkeys(add_ids)),
        remove_ids=remove_ids,
        anonymous=not identified,
        becomes_identified=was_anonymous and identified,
    )


async def apply(
    storage: Storage,
    contact: Document,
    change: ContactChange,
    now: dt.datetime,
    *,
    visit: tuple[dt.datetime, str | None] | None = None,
) -> bool:
    """Write `change` to an existing contact (with a visit's time and IP). False when the contact
    no longer exists; `DuplicateKeyError` when another contact holds one of the new unique keys."""
    return await storage.contacts.change(
        contact["_id"],
        now=now,
        set_values=change.set_values(now, contact),
        unset=change.unset(),
        add_ids=change.add_ids,
        remove_ids=change.remove_ids,
        add_tags=change.added_tags,
        remove_tags=change.removed_tags,
        visit=visit,
    )


async def create(storage: Storage, change: ContactChange, now: dt.datetime, ip: str | None) -> Document:
    """A new contact holding `change` (planned against `{}`), written in one insert:
    `DuplicateKeyError` when another contact holds one of its unique keys, and nothing is written."""
    return await storage.contacts.add(draft(storage, change, now, ip))


def draft(storage: Storage, change: ContactChange, now: dt.datetime, ip: str | None) -> Document:
    """`create`'s contact, not written yet: for a contact no unique key can refuse, written with
    the visit that makes it (`Storage.store_visit`)."""
    return storage.contacts.draft(
        now,
        ip,
        fields=change.after,
        ids=change.add_ids,
        tags=change.added_tags,
        identified=not change.anonymous,
    )


async def existing_contact(storage: Storage, contact_id: str) -> Document:
    contact = await storage.contacts.resolve(contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id!r}")
    return contact


def _validated(definition: FieldDefinition | None, alias: str, raw: object) -> FieldValue | None:
    if definition is None:
        raise BadUserInput(f"no contact field {alias!r}; create it first (createField)")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str | int | float | bool):
        raise BadUserInput(f"field {alias!r}: expected a string, number or boolean")
    try:
        return validate_value(definition, str(raw).lower() if isinstance(raw, bool) else str(raw))
    except FieldValueError as exc:
        raise BadUserInput(f"field {alias!r}: {exc}") from None


async def update_fields(services: Services, contact_id: str, values: Mapping[str, Any]) -> Document:
    """Set (or, with null / "", remove) field values; all are validated before anything is written."""
    if not isinstance(values, Mapping) or not values:
        raise BadUserInput("fields must be a non-empty object of {alias: value}")
    storage = services.storage
    contact = await existing_contact(storage, contact_id)
    registry = {f.alias: f for f in await storage.fields.all()}
    validated = {alias: _validated(registry.get(alias), alias, raw) for alias, raw in values.items()}
    change = plan_fields(contact, validated, registry)
    if not change:
        return contact
    now = now_ms()
    try:
        await apply(storage, contact, change, now)
    except DuplicateKeyError:
        raise BadUserInput(
            "another contact already has this value of a unique field; merge them instead"
        ) from None
    await services.recorder.record(change.activities(contact["_id"], now), change.applied_to(contact))
    return await existing_contact(storage, contact["_id"])


async def tag_contact(
    services: Services, contact_id: str, add: list[str] | None, remove: list[str] | None
) -> Document:
    storage = services.storage
    contact = await existing_contact(storage, contact_id)
    requested = TagChanges.requested(add, remove)
    now = now_ms()
    added, removed = await diff(storage, contact.get("tags", []), requested, now)
    change = ContactChange(
        after=contact.get("fields", {}),
        anonymous=bool(contact.get("anonymous", True)),
        added_tags=added,
        removed_tags=removed,
    )
    if not change:
        return contact
    await apply(storage, contact, change, now)
    updated = await existing_contact(storage, contact["_id"])
    await services.recorder.record(change.activities(contact["_id"], now), updated)
    return updated


async def merge_contacts(services: Services, winner_id: str, loser_id: str) -> Document:
    winner = await existing_contact(services.storage, winner_id)
    loser = await existing_contact(services.storage, loser_id)
    if winner["_id"] == loser["_id"]:
        raise BadUserInput("these ids are the same contact")
    merged, activity = await merge(services.storage, winner=winner, loser=loser, now=now_ms())
    await services.recorder.record([activity], merged)
    return merged


async def merges_of(storage: Storage, contact_id: str) -> list[Document]:
    """The merge log entries of a contact and of every id merged into it (won or lost), newest
    first; an id merged away names its survivor's."""
    contact = await storage.contacts.resolve(contact_id)
    ids = {contact_id}
    if contact is not None:
        ids |= {contact["_id"], *await storage.contacts.merged_into(contact["_id"])}
    return await storage.contacts.merge_entries(ids)


async def unmerge_contact(services: Services, merge_id: str) -> Document:
    """Undo a merge (docs/identity.md, "Undoing a merge"): the merged contact comes back as it was
    (its id, fields, tags, keys and claims), with everything the merge moved; the survivor loses
    what the merge gave it. What either recorded after the merge stays with the survivor.
    Returns the restored contact."""
    storage = services.storage
    try:
        key = ObjectId(merge_id)
    except (InvalidId, TypeError):
        raise NotFound(f"no merge {merge_id!r}") from None
    entry = await storage.contacts.merge_entry(key)
    if entry is None:
        raise NotFound(f"no merge {merge_id!r}")
    winner_id, loser_id = entry["winner_id"], entry["loser_id"]
    loser: Document = entry["loser"]
    now = now_ms()

    async def steps(session: Session) -> tuple[int, int]:
        """All or nothing where transactions exist; read again inside, so that a merge or an
        undo running at the same moment makes one of them fail without a trace."""
        contacts = storage.contacts
        current = await contacts.merge_entry(key, session=session)
        if current is None or current.get("undone_at") is not None:
            raise BadUserInput("this merge was undone already")
        winner = await contacts.get(winner_id, session=session)
        if winner is None:
            later = await contacts.winners_of([winner_id], session=session)
            if later:
                raise BadUserInput(
                    f"contact {winner_id} was merged into {later[winner_id]} since: undo that merge first"
                )
            raise BadUserInput(f"contact {winner_id} was erased: there is nothing to separate")
        if being_merged(winner, now):
            raise MergeInProgress("the survivor is being merged at this moment; try again")
        if session is None and not await contacts.mark_unmerged(key, now):
            # Without a transaction the entry is claimed first: of two undos, one goes on.
            raise BadUserInput("this merge was undone already")
        mine, theirs = winner.get("fields", {}), loser.get("fields", {})
        # A filled value the survivor changed since is its own now: it stays.
        given = [
            alias for alias in entry.get("filled", []) if alias in mine and mine[alias] == theirs.get(alias)
        ]
        before = entry.get("winner_before", {})
        kept = {alias: value for alias, value in mine.items() if alias not in given}
        restore: dict[str, object] = {"created_at": before.get("created_at", winner["created_at"])}
        if not before.get("anonymous", True):
            restore.update(anonymous=False, identified_at=before.get("identified_at"))
        elif is_identified(kept):  # identified by values of its own since
            restore.update(anonymous=False, identified_at=winner.get("identified_at") or now)
        else:
            restore.update(anonymous=True, identified_at=None)
        adopted = set(entry.get("adopted_ids", []))
        for held_key, holder in (await contacts.holders(loser.get("ids", []), session=session)).items():
            if not (holder == winner_id and held_key in adopted):
                raise BadUserInput(
                    f"the merged contact's {held_key.split(':', 1)[0]} now belongs to contact {holder}: "
                    "change or merge that contact first"
                )
        held = set(winner.get("tags", []))
        await contacts.separate(
            winner_id,
            now=now,
            unset_fields=given,
            pull_tags=[tag for tag in entry.get("tags_added", []) if tag in held],
            pull_ids=entry.get("adopted_ids", []),
            pull_claims=loser.get("claims", []),
            restore=restore,
            points=int(loser.get("points", 0)),
            session=session,
        )
        await contacts.restore(loser, session=session)
        await contacts.unrecord_merge(loser_id, entry.get("repointed", []), session=session)
        devices = await storage.devices.move_back(winner_id, loser_id, session=session)
        hits = await storage.hits.move_back(winner_id, loser_id, session=session)
        await storage.activities.move_back(winner_id, loser_id, session=session)
        if session is not None and not await contacts.mark_unmerged(key, now, session=session):
            raise BadUserInput("this merge was undone already")
        return hits, devices

    try:
        hits, devices = await in_transaction(storage, steps)
    except DuplicateKeyError:  # a key of the merged contact was taken a moment ago
        raise BadUserInput(
            "a unique value of the merged contact was just given to another contact; try again"
        ) from None
    await storage.contacts.changed(winner_id, loser_id)
    await services.invalidations.announce_devices_moved()
    await storage.audit.log(
        "unmerge",
        now,
        {"merge_id": key, "winner_id": winner_id, "loser_id": loser_id, "hits": hits, "devices": devices},
    )
    restored = await storage.contacts.get(loser_id)
    survivor = await storage.contacts.get(winner_id)
    data = {"merge_id": merge_id, "hits_returned": hits, "devices_returned": devices}
    await services.recorder.record(
        [Activity("contact_unmerged", loser_id, now, {**data, "separated_from": winner_id})], restored
    )
    await services.recorder.record(
        [Activity("contact_unmerged", winner_id, now, {**data, "separated_from": loser_id})], survivor
    )
    if restored is None:  # erased the moment after
        raise NotFound(f"no contact {loser_id!r}")
    return restored


async def erase_contact(services: Services, contact_id: str) -> bool:
    """GDPR erasure: the contact, its hits, UTM records, devices, timeline, the merge records that
    resolved to it and its entries on the activity stream. The audit entry holds counts only."""
    storage = services.storage
    contact = await existing_contact(storage, contact_id)
    key = contact["_id"]
    merged_ids = await storage.contacts.merged_into(key)
    hits = utm = devices = activities = 0
    # The ids merged into it too: a write that raced a merge may have landed under one of them.
    for owner in (key, *merged_ids):
        owned_hits, owned_utm = await storage.hits.delete_for_contact(owner)
        hits, utm = hits + owned_hits, utm + owned_utm
        devices += await storage.devices.delete_for_contact(owner)
        activities += await storage.activities.delete_for_contact(owner)
        # What rules and webhooks kept about it (firings, gates, delivered events).
        await storage.rules.delete_for_contact(owner)
        await storage.webhooks.delete_for_contact(owner)
    await storage.contacts.delete_merge_records(key)
    # The merge log holds what merged contacts looked like: erased with them.
    await storage.contacts.delete_merge_entries([key, *merged_ids])
    await storage.contacts.delete(key)
    # Entries still waiting for Redis first, so that none reaches the stream after its erasure.
    waiting = await services.publisher.erase_waiting({key, *merged_ids})
    stream_entries = waiting + await services.publisher.erase({key, *merged_ids})
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
    storage = services.storage
    if contact_id is not None:
        return await existing_contact(storage, contact_id)
    definition = await storage.fields.get("email")
    if definition is None or email is None:
        raise BadUserInput("the email field does not exist")
    value = _validated(definition, "email", email)
    if value is None:
        raise BadUserInput("email is empty")
    key = unique_key("email", value)
    found = await storage.contacts.find_by_unique([key])
    if found is not None:
        return found
    now = now_ms()
    # The email is indexed as unique for this lookup even when the field is not unique.
    change = plan_fields({}, {"email": value}, {"email": definition})
    change.add_ids = [key]
    try:
        contact = await create(storage, change, now, None)
    except DuplicateKeyError:  # created by someone else a moment ago
        found = await storage.contacts.find_by_unique([key])
        if found is None:
            raise
        return found
    await services.recorder.record(
        [Activity("contact_created", contact["_id"], now), *change.activities(contact["_id"], now)], contact
    )
    return contact


async def record_activity(
    services: Services,
    *,
    contact_id: str | None,
    email: str | None,
    activity_type: str,
    properties: Any,
    occurred_at: dt.datetime | None,
    points: int | None = None,
) -> Document:
    if not ACTIVITY_TYPE.match(activity_type):
        raise BadUserInput("type must be 1-64 letters, digits or _ . : - and start with a letter")
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise BadUserInput("properties must be a JSON object")
    if len(json.dumps(properties, default=str)) > MAX_PROPERTIES_BYTES:
        raise BadUserInput(f"properties must be at most {MAX_PROPERTIES_BYTES} bytes of JSON")
    if points and not -MAX_POINTS <= points <= MAX_POINTS:
        raise BadUserInput(f"points must be between -{MAX_POINTS} and {MAX_POINTS}")
    now = now_ms()
    when = occurred_at or now
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if not EARLIEST_ACTIVITY <= when <= now + MAX_CLOCK_AHEAD:
        raise BadUserInput(
            f"occurredAt must be between {EARLIEST_ACTIVITY:%Y-%m-%d} and one day from now (UTC), "
            f"not {when.isoformat()}"
        )
    contact = await contact_for_ref(services, contact_id, email)
    activity = Activity(
        "custom_activity", contact["_id"], when, {"activity_type": activity_type, "properties": properties}
    )
    stored = await services.recorder.record([activity], contact)
    if points:
        now = now_ms()
        try:
            await services.storage.contacts.apply_rules([(contact["_id"], points, None)], now=now)
        finally:
            await services.storage.contacts.changed(contact["_id"])
        after = await services.storage.contacts.get(contact["_id"])
        if after is not None:
            data = {"delta": points, "total": int(after.get("points", 0)), "cause_activity_id": activity.id}
            await services.recorder.record([Activity("points_changed", contact["_id"], now, data)], after)
    return stored[0]
