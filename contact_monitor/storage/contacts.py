"""The `contacts` collection, and `merges` that keep the ids of merged contacts resolving.

A contact document:
    _id            24 hex chars, the `mtc_id` cookie value
    created_at, updated_at, last_active, identified_at (null while anonymous)
    anonymous      true until one of email/firstname/lastname/company has a value
    fields         {alias: value}
    ids            ["email:ann@example.com", ...]: unique-field keys, `unique_key` (unique index;
                   absent when none)
    tags           ["ProductA", ...]: display names
    last_ip        last stored IP (or truncated IP / null when anonymising)
The whole data contract: docs/data-contract.md; the identity rules: docs/identity.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from contact_monitor.storage.batch import InsertBatcher
from contact_monitor.storage.documents import Document, Session, newest_first, older_than
from contact_monitor.storage.ids import new_contact_id

MAX_MERGE_CHAIN = 16
# A merge marks its loser first (`merging`); a mark older than this is an interrupted merge's.
MERGE_LOCK_SECONDS = 60
MAX_CLAIMS = 20  # unverified identity claims kept per contact, newest last (docs/identity.md)
DEFAULT_CACHE_SIZE = 10_000
# Announces the ids of changed contacts to the other processes ("*": any contact may have changed).
Announcer = Callable[[Sequence[str]], Awaitable[None]]
ANY_CONTACT = "*"


def unique_key(alias: str, value: object) -> str:
    """The key of a unique field value in `ids`: case-insensitive, as Mautic's MySQL collation
    compares (docs/identity.md, "Unique fields")."""
    text = value if isinstance(value, str) else repr(value)
    return f"{alias}:{text.strip().casefold()}"


class ContactCache:
    """Contacts by id as this process last read or created them (LRU of `size`), for the tracking
    hot path: a returning visitor's hit then reads nothing from MongoDB (docs/caches.md).

    Used only while `enabled`: the app turns it on once it is subscribed to the invalidation
    channel and off (emptied) whenever that subscription is lost or silent, so an entry never
    outlives a change another process announced. Every write through `ContactRepository` drops
    the entries it touches at once (a rule's transaction replaces an entry it read unchanged
    with what it wrote: `committed`) and announces them. A read that was in flight while anything
    was dropped is not kept (`generation`): it may predate the change. Entries are shared, not
    copied: callers treat contact documents as read-only (the core builds new ones)."""

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[str, Document] = OrderedDict()
        self.enabled = False
        self.generation = 0
        # Set by every drop; `on`/`off` follow `enabled` (tests and start-up wait on them).
        self.dropped, self.on, self.off = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.off.set()
        self.hits = self.misses = 0

    def get(self, contact_id: str) -> Document | None:
        contact = self.entries.get(contact_id)
        if contact is None:
            self.misses += 1
        else:
            self.hits += 1
            self.entries.move_to_end(contact_id)
        return contact

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, contact: Document, generation: int) -> None:
        """Keep `contact`, read when the cache was at `generation`, unless something was dropped since."""
        if not self.enabled or generation != self.generation or self.size <= 0:
            return
        self.entries[contact["_id"]] = contact
        self.entries.move_to_end(contact["_id"])
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def drop(self, ids: Iterable[str]) -> None:
        self.generation += 1
        for contact_id in ids:
            if contact_id == ANY_CONTACT:
                self.entries.clear()
            else:
                self.entries.pop(contact_id, None)
        self.dropped.set()

    def enable(self) -> None:
        self.drop([ANY_CONTACT])  # what changed while nobody listened is unknown
        self.enabled = self.size > 0
        if self.enabled:
            self.off.clear()
            self.on.set()

    def disable(self) -> None:
        self.enabled = False
        self.drop([ANY_CONTACT])
        self.on.clear()
        self.off.set()


class ContactRepository:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        inserts: InsertBatcher,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.contacts = db["contacts"]
        self.merges = db["merges"]
        # One entry per merge: what the loser was, what moved, and whether it was undone.
        self.merge_log = db["merge_log"]
        # New contacts' group commit (with new devices and their hits: `Storage.writes`).
        self.inserts = inserts
        self.cache = ContactCache(cache_size)
        # Set by the app (contact_monitor.core.invalidation); None: nobody else to tell.
        self.announce: Announcer | None = None

    async def changed(self, *ids: str) -> None:
        """After a write: forget these contacts here and tell the other processes."""
        self.cache.drop(ids)
        if self.announce is not None:
            await self.announce(ids)

    async def create_indexes(self, *, by_ip: bool = False) -> None:
        """`by_ip`: the index that matching visitors by IP (CM_TRACK_BY_IP) reads, made only
        then; every index costs each new contact (an earlier version's is left in place:
        CHANGELOG)."""
        await self.contacts.create_index("ids", unique=True, sparse=True)
        await self.contacts.create_index([("last_active", DESCENDING)])
        await self.contacts.create_index("tags")
        if by_ip:
            await self.contacts.create_index("last_ip", sparse=True)
        # `contacts(orderBy: POINTS)` and `pointsAtLeast`; contacts written before points existed
        # get 0 (once: afterwards nothing matches).
        await self.contacts.create_index([("points", DESCENDING), ("_id", DESCENDING)])
        await self.contacts.update_many({"points": {"$exists": False}}, {"$set": {"points": 0}})
        await self.merges.create_index([("winner_id", ASCENDING)])
        await self.merges.create_index([("merged_at", DESCENDING)])
        await self.merge_log.create_index([("winner_id", ASCENDING), ("merged_at", DESCENDING)])
        await self.merge_log.create_index([("loser_id", ASCENDING)])

    async def get(self, contact_id: str, *, cached: bool = False, session: Session = None) -> Document | None:
        """The contact; with `cached`, from the cache when it holds it (the tracking hot path)."""
        if not cached or not self.cache.enabled or session is not None:
            return await self.contacts.find_one({"_id": contact_id}, session=session)
        contact = self.cache.get(contact_id)
        if contact is None:
            generation = self.cache.generation
            contact = await self.contacts.find_one({"_id": contact_id})
            if contact is not None:
                self.cache.put(contact, generation)
        return contact

    async def resolve(self, contact_id: str, *, cached: bool = False) -> Document | None:
        """The contact, or the survivor it was merged into."""
        for _ in range(MAX_MERGE_CHAIN):
            contact = await self.get(contact_id, cached=cached)
            if contact is not None:
                return contact
            record = await self.merges.find_one({"_id": contact_id})
            if record is None:
                return None
            contact_id = record["winner_id"]
        return None

    async def add(
        self, contact: Document, *, then: Sequence[tuple[AsyncCollection[Document], Document]] = ()
    ) -> Document:
        """A drafted contact, written now (with concurrent requests' writes) with its values and
        unique keys in one insert, and cached: a key that another contact holds raises
        `DuplicateKeyError` and nothing is written. `then`: documents naming it (its visit's
        device and hit), written in the same round once it is stored."""
        generation = self.cache.generation
        await self.inserts.insert_together([(self.contacts, contact), *then])
        self.cache.put(contact, generation)  # exactly what was written
        return contact

    def draft(
        self,
        now: dt.datetime,
        ip: str | None,
        *,
        fields: Mapping[str, object] | None = None,
        ids: Iterable[str] = (),
        tags: Iterable[str] = (),
        identified: bool = False,
    ) -> Document:
        """A new contact's document, not written yet (`add` writes one; the tracking path writes
        it along with the visit's device and hit: `Storage.store_visit`)."""
        contact: Document = {
            "_id": new_contact_id(),
            "created_at": now,
            "updated_at": now,
            "last_active": now,
            "identified_at": now if identified else None,
            "anonymous": not identified,
            "fields": dict(fields or {}),
            "tags": list(tags),
            "last_ip": ip,
            "points": 0,
        }
        if keys := list(ids):
            contact["ids"] = keys  # absent rather than empty: the unique index is sparse
        return contact

    async def find_by_unique(self, keys: Iterable[str]) -> Document | None:
        """The contact holding any of these unique keys (oldest first: it is the established one)."""
        keys = list(keys)
        if not keys:
            return None
        cursor = self.contacts.find({"ids": {"$in": keys}}).sort("created_at", ASCENDING).limit(1)
        async for contact in cursor:
            return contact
        return None

    async def change(
        self,
        contact_id: str,
        *,
        now: dt.datetime,
        set_values: Mapping[str, object] | None = None,
        unset: Iterable[str] = (),
        add_ids: Iterable[str] = (),
        remove_ids: Iterable[str] = (),
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
        visit: tuple[dt.datetime, str | None] | None = None,
    ) -> bool:
        """Every change to a contact goes through here: field values, unique keys, tags, and for a
        visit its time (`last_active` only moves forward) and IP. One update, plus one more when
        tags are both added and removed or keys are removed; the extra updates come after the
        main one, so `DuplicateKeyError` (a key another contact holds) leaves the contact
        unchanged. False when the contact no longer exists. (`update_one`, not
        `find_one_and_update`: on SecantusDB the latter costs ~8 ms against ~1 ms.)"""
        update: Document = {"$set": {"updated_at": now, **(set_values or {})}}
        if visit is not None:
            active_at, ip = visit
            update["$set"]["last_ip"] = ip
            update["$max"] = {"last_active": active_at}
        if unset_paths := list(unset):
            update["$unset"] = dict.fromkeys(unset_paths, "")
        add_to_set: Document = {}
        if new_ids := list(add_ids):
            add_to_set["ids"] = {"$each": new_ids}
        if tags := list(add_tags):
            add_to_set["tags"] = {"$each": tags}
        if add_to_set:
            update["$addToSet"] = add_to_set
        removed = list(remove_tags)
        if removed and not tags:
            update["$pull"] = {"tags": {"$in": removed}}
        try:
            result = await self.contacts.update_one({"_id": contact_id}, update)
            if removed and tags:
                # MongoDB refuses $addToSet and $pull on one path in one update; pulled only after
                # the main update succeeded, so that a DuplicateKeyError leaves the contact unchanged.
                await self.contacts.update_one({"_id": contact_id}, {"$pull": {"tags": {"$in": removed}}})
            if old := [key for key in remove_ids if key not in new_ids]:
                await self.contacts.update_one({"_id": contact_id}, {"$pull": {"ids": {"$in": old}}})
                await self.contacts.update_many(
                    {"_id": contact_id, "ids": {"$size": 0}}, {"$unset": {"ids": ""}}
                )
        finally:
            await self.changed(contact_id)  # also after a failure: part of it may be written
        return result.matched_count == 1

    async def apply_rules(
        self,
        changes: Sequence[tuple[str, int, list[str] | None]],
        *,
        now: dt.datetime,
        session: Session = None,
    ) -> None:
        """Rules' actions on contacts: (contact id, points added, the tags as the rules leave
        them or None: not changed). One update per distinct change: a batch's firings mostly add
        the same points to different contacts. The caller announces the contacts after its
        transaction (`committed`)."""
        groups: dict[tuple[int, tuple[str, ...] | None], list[str]] = {}
        for contact_id, points, tags in changes:
            if points or tags is not None:
                key = (points, None if tags is None else tuple(tags))
                groups.setdefault(key, []).append(contact_id)
        for (points, held), ids in groups.items():
            update: Document = {"$set": {"updated_at": now}}
            if points:
                update["$inc"] = {"points": points}
            if held is not None:
                update["$set"]["tags"] = list(held)
            await self.contacts.update_many({"_id": {"$in": ids}}, update, session=session)

    def cached_now(self, ids: Iterable[str]) -> dict[str, Document]:
        """The cached documents of these contacts, as objects (see `committed`)."""
        entries = self.cache.entries
        return {contact_id: entries[contact_id] for contact_id in ids if contact_id in entries}

    async def committed(self, contacts: Sequence[Document], held: Mapping[str, Document]) -> None:
        """After a transaction wrote these contacts (whole documents as it wrote them): this
        process keeps in its cache, in their new state, those whose cached object is still the
        one `held` (from `cached_now` before the transaction): nothing of this process wrote
        them since (a write drops the object, a read caches another), so the next hit of their
        visitors reads nothing. Any other copy is only dropped. The other processes forget them."""
        ids = [contact["_id"] for contact in contacts]
        entries = self.cache.entries
        kept = [c for c in contacts if c["_id"] in held and entries.get(c["_id"]) is held[c["_id"]]]
        self.cache.drop(ids)
        generation = self.cache.generation  # no await from the drop to the puts
        for contact in kept:
            self.cache.put(contact, generation)
        if self.announce is not None and ids:
            await self.announce(ids)

    async def add_claims(self, contact_id: str, claims: Mapping[str, object], now: dt.datetime) -> None:
        """Keep unverified identity claims on the contact (`claims`: the newest MAX_CLAIMS)."""
        entries = [{"alias": alias, "value": value, "claimed_at": now} for alias, value in claims.items()]
        await self.contacts.update_one(
            {"_id": contact_id}, {"$push": {"claims": {"$each": entries, "$slice": -MAX_CLAIMS}}}
        )
        await self.changed(contact_id)

    async def adopt_ids(self, contact_id: str, keys: Iterable[str], *, session: Session = None) -> list[str]:
        """Give a merge survivor the unique keys of the contact merged into it (for aliases it
        lacks). Returns the keys it got."""
        contact = await self.get(contact_id, session=session)
        if contact is None:
            return []
        held = {key.split(":", 1)[0] for key in contact.get("ids", [])}
        missing = [key for key in keys if key.split(":", 1)[0] not in held]
        if missing:
            await self.contacts.update_one(
                {"_id": contact_id}, {"$addToSet": {"ids": {"$each": missing}}}, session=session
            )
            await self.changed(contact_id)
        return missing

    async def log_merge(self, entry: Document, *, session: Session = None) -> None:
        await self.merge_log.insert_one(entry, session=session)

    async def merge_entries(self, contact_ids: Iterable[str]) -> list[Document]:
        """The merges these contacts won or lost, newest first."""
        ids = list(contact_ids)
        cursor = self.merge_log.find({"$or": [{"winner_id": {"$in": ids}}, {"loser_id": {"$in": ids}}]})
        return [entry async for entry in cursor.sort("merged_at", DESCENDING)]

    async def merge_entry(self, merge_id: Any, *, session: Session = None) -> Document | None:
        return await self.merge_log.find_one({"_id": merge_id}, session=session)

    async def mark_unmerged(self, merge_id: Any, now: dt.datetime, *, session: Session = None) -> bool:
        """Mark the entry undone, once: False when it already was (a concurrent undo)."""
        result = await self.merge_log.update_one(
            {"_id": merge_id, "undone_at": None}, {"$set": {"undone_at": now}}, session=session
        )
        return result.matched_count == 1

    async def separate(
        self,
        winner_id: str,
        *,
        now: dt.datetime,
        unset_fields: Iterable[str],
        pull_tags: Iterable[str],
        pull_ids: Iterable[str],
        pull_claims: Iterable[Document] = (),
        restore: Mapping[str, object],
        points: int = 0,
        session: Session = None,
    ) -> None:
        """Take back from a merge survivor what the merge gave it."""
        update: Document = {"$set": {"updated_at": now, **restore}}
        if points:
            update["$inc"] = {"points": -points}
        if fields := [f"fields.{alias}" for alias in unset_fields]:
            update["$unset"] = dict.fromkeys(fields, "")
        pull: Document = {}
        if tags := list(pull_tags):
            pull["tags"] = {"$in": tags}
        if keys := list(pull_ids):
            pull["ids"] = {"$in": keys}
        if claims := list(pull_claims):
            pull["claims"] = {"$in": claims}
        if pull:
            update["$pull"] = pull
        try:
            await self.contacts.update_one({"_id": winner_id}, update, session=session)
            await self.contacts.update_many(
                {"_id": winner_id, "ids": {"$size": 0}}, {"$unset": {"ids": ""}}, session=session
            )
        finally:
            await self.changed(winner_id)

    async def restore(self, contact: Document, *, session: Session = None) -> None:
        """Insert a contact as it was (an undone merge's loser, with its id and keys)."""
        try:
            await self.contacts.insert_one(dict(contact), session=session)
        finally:
            await self.changed(contact["_id"])

    async def unrecord_merge(
        self, loser_id: str, repointed: Iterable[str], *, session: Session = None
    ) -> None:
        """The loser's id resolves to itself again, and so do the ids that resolved to it."""
        await self.merges.delete_one({"_id": loser_id}, session=session)
        if ids := list(repointed):
            await self.merges.update_many(
                {"_id": {"$in": ids}}, {"$set": {"winner_id": loser_id}}, session=session
            )

    async def delete_merge_entries(self, contact_ids: Iterable[str]) -> int:
        ids = list(contact_ids)
        result = await self.merge_log.delete_many(
            {"$or": [{"winner_id": {"$in": ids}}, {"loser_id": {"$in": ids}}]}
        )
        return result.deleted_count

    async def holders(self, keys: Iterable[str], *, session: Session = None) -> dict[str, str]:
        """Which contact holds each of these unique keys (those nobody holds are absent)."""
        wanted = set(keys)
        found: dict[str, str] = {}
        async for contact in self.contacts.find({"ids": {"$in": list(wanted)}}, {"ids": 1}, session=session):
            for key in contact.get("ids", []):
                if key in wanted:
                    found[key] = contact["_id"]
        return found

    async def merged_since(self, since: dt.datetime) -> list[str]:
        """Ids merged away at or after `since`."""
        cursor = self.merges.find({"merged_at": {"$gte": since}}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def winners_of(self, contact_ids: Iterable[str], *, session: Session = None) -> dict[str, str]:
        """For those of these ids that were merged away: the contact each was merged into."""
        ids = list(set(contact_ids))
        if not ids:
            return {}
        cursor = self.merges.find({"_id": {"$in": ids}}, session=session)
        return {doc["_id"]: doc["winner_id"] async for doc in cursor}

    async def merged_into(self, contact_id: str, *, session: Session = None) -> list[str]:
        cursor = self.merges.find({"winner_id": contact_id}, {"_id": 1}, session=session)
        return [doc["_id"] async for doc in cursor]

    async def latest_by_ip(self, ip: str) -> Document | None:
        cursor = self.contacts.find({"last_ip": ip}).sort("last_active", DESCENDING).limit(1)
        async for contact in cursor:
            return contact
        return None

    async def absorb(
        self,
        winner_id: str,
        loser: Document,
        now: dt.datetime,
        set_values: Mapping[str, object],
        *,
        session: Session = None,
    ) -> Document | None:
        """Fold the loser into the winner: `set_values` (decided by the core's merge), the earlier
        creation, the later activity and the union of tags. Returns the winner as it is after."""
        update: Document = {
            "$set": {"updated_at": now, **set_values},
            "$min": {"created_at": loser["created_at"]},
            "$max": {"last_active": loser["last_active"]},
        }
        if loser.get("tags"):
            update["$addToSet"] = {"tags": {"$each": loser["tags"]}}
        if loser.get("points"):  # rules' points add up (docs/automation.md)
            update["$inc"] = {"points": loser["points"]}
        if loser.get("claims"):  # the newest MAX_CLAIMS of both (contact_monitor/core/identity.py)
            update["$push"] = {
                "claims": {"$each": loser["claims"], "$sort": {"claimed_at": 1}, "$slice": -20}
            }
        # An update and a read, not find_one_and_update: SecantusDB runs findAndModify as a scan of
        # the whole collection (its write filter is `{_id, $and: [query]}`, which no index covers).
        try:
            result = await self.contacts.update_one({"_id": winner_id}, update, session=session)
            if not result.matched_count:
                return None
            return await self.contacts.find_one({"_id": winner_id}, session=session)
        finally:
            await self.changed(winner_id)

    async def lock_for_merge(self, loser_id: str, winner_id: str, now: dt.datetime, *, token: Any) -> bool:
        """Mark the loser as being merged into the winner by the merge `token`, unless another
        merge marked it less than MERGE_LOCK_SECONDS ago (an interrupted merge's mark expires).
        False: not marked."""
        stale = now - dt.timedelta(seconds=MERGE_LOCK_SECONDS)
        result = await self.contacts.update_one(
            {"_id": loser_id, "$or": [{"merging": {"$exists": False}}, {"merging.since": {"$lt": stale}}]},
            {"$set": {"merging": {"into": winner_id, "since": now, "token": token}}},
        )
        await self.changed(loser_id)
        return result.matched_count == 1

    async def unlock_merge(self, loser_id: str, *, token: Any) -> None:
        """Remove the mark of the merge `token` (never another merge's)."""
        await self.contacts.update_one({"_id": loser_id, "merging.token": token}, {"$unset": {"merging": ""}})
        await self.changed(loser_id)

    async def record_merge(
        self, loser_id: str, winner_id: str, now: dt.datetime, *, session: Session = None
    ) -> None:
        """Old ids keep resolving: the loser points at the winner, and so does whatever pointed at it."""
        await self.merges.update_one(
            {"_id": loser_id},
            {"$set": {"winner_id": winner_id, "merged_at": now}},
            upsert=True,
            session=session,
        )
        await self.merges.update_many(
            {"winner_id": loser_id}, {"$set": {"winner_id": winner_id}}, session=session
        )

    async def index_unique_field(self, alias: str) -> tuple[int, int]:
        """After a field became unique: add its key to existing contacts. Returns (indexed, conflicts);
        a conflict is a contact sharing the value with an older one (left unindexed, never merged here)."""
        indexed = conflicts = 0
        cursor = self.contacts.find({f"fields.{alias}": {"$exists": True}}).sort("created_at", ASCENDING)
        async for contact in cursor:
            value = contact["fields"].get(alias)
            if value in (None, ""):
                continue
            try:
                await self.contacts.update_one(
                    {"_id": contact["_id"]}, {"$addToSet": {"ids": unique_key(alias, value)}}
                )
                indexed += 1
            except DuplicateKeyError:
                conflicts += 1
        await self.changed(ANY_CONTACT)
        return indexed, conflicts

    async def unindex_unique_field(self, alias: str) -> None:
        await self.contacts.update_many({}, {"$pull": {"ids": {"$regex": f"^{re.escape(alias)}:"}}})
        # An empty array would be indexed (and collide) in the sparse unique index: remove it.
        await self.contacts.update_many({"ids": {"$size": 0}}, {"$unset": {"ids": ""}})
        await self.changed(ANY_CONTACT)

    async def many(self, ids: Iterable[str], *, session: Session = None) -> dict[str, Document]:
        query = {"_id": {"$in": list(ids)}}
        return {doc["_id"]: doc async for doc in self.contacts.find(query, session=session)}

    async def search(
        self, query: Mapping[str, Any], *, after: Any, limit: int, order: str = "last_active"
    ) -> list[Document]:
        """Contacts matching `query`, highest `order` (last_active or points) first, after the
        cursor (value, id)."""
        full: Document = dict(query)
        if after is not None:
            page = older_than(order, after)
            full = {"$and": [full, page]} if full else page
        cursor = self.contacts.find(full).sort(newest_first(order)).limit(limit)
        return [doc async for doc in cursor]

    async def count(self, query: Mapping[str, Any]) -> int:
        return await self.contacts.count_documents(dict(query))

    async def tag_counts(self, names: list[str]) -> dict[str, int]:
        """How many contacts carry each of these tags (display names), through the `tags` index."""
        if not names:
            return {}
        pipeline: list[Document] = [
            {"$match": {"tags": {"$in": names}}},
            {"$unwind": "$tags"},
            {"$match": {"tags": {"$in": names}}},
            {"$group": {"_id": "$tags", "count": {"$sum": 1}}},
        ]
        return {doc["_id"]: int(doc["count"]) async for doc in await self.contacts.aggregate(pipeline)}

    async def delete_merge_records(self, winner_id: str) -> None:
        await self.merges.delete_many({"$or": [{"winner_id": winner_id}, {"_id": winner_id}]})

    async def delete(self, contact_id: str, *, session: Session = None) -> None:
        try:
            await self.contacts.delete_one({"_id": contact_id}, session=session)
        finally:
            await self.changed(contact_id)
