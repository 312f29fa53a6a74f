"""Who is this visitor? Resolve the contact and device of a visit, and merge contacts.

The rules are in docs/identity.md; in short, first match wins:
1. the unique, publicly updatable fields of the request (email, ...) name an existing contact;
   the cookie visitor is merged into it when their unique values do not conflict (an anonymous
   visitor never conflicts), otherwise the visit switches to the named contact;
2. the device: `mautic_device_id` cookie or parameter -> its contact;
3. the `mtc_id` cookie -> that contact, or the survivor it was merged into;
4. the last contact seen from this IP, only with CM_TRACK_BY_IP and only when the request names
   no unique field (an IP is a guess: it never causes a merge);
5. nobody: the caller creates a new contact (with its values and keys in one insert).

`merge` is the one merge: tracking, form posts and the `mergeContacts` mutation all call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from bson import ObjectId
from pymongo.errors import OperationFailure

from contact_monitor.core.activity import Activity, now_ms
from contact_monitor.core.errors import MergeInProgress
from contact_monitor.core.fields import is_identified
from contact_monitor.storage import Storage
from contact_monitor.storage.contacts import MERGE_LOCK_SECONDS
from contact_monitor.storage.documents import Document, Session

log = logging.getLogger(__name__)

# The parameter (or form field) that proves a unique value under CM_IDENTITY_SECRET.
IDENTITY_HASH = "identity_hash"

# Longest `mtc_id` cookie value looked up (ids are 24 characters).
MAX_CONTACT_COOKIE = 64
DEVICE_CACHE_SIZE = 100_000


@dataclass
class Visitor:
    """The outcome of identification: the contact (None: a new one is to be created) and, when it
    belongs to that contact, the device; plus the activities identification caused (merges)."""

    contact: Document | None
    device: Document | None
    activities: list[Activity] = field(default_factory=list)

    @property
    def identified(self) -> bool:
        return self.contact is not None and not self.contact.get("anonymous", True)


def identity_hash(secret: str, key: str) -> str:
    """What the site's server computes to vouch for a unique value: hex HMAC-SHA256 of the
    normalized value (the part of the unique key after "alias:": trimmed and case-folded, which
    for an ASCII email is plain lower case) under CM_IDENTITY_SECRET."""
    value = key.split(":", 1)[1]
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def verifies(secret: str, key: str, proof: str | None) -> bool:
    if not proof:
        return False
    return hmac.compare_digest(identity_hash(secret, key).encode(), proof.strip().lower().encode("utf-8"))


def _by_alias(keys: Iterable[str]) -> dict[str, str]:
    return dict(key.split(":", 1) for key in keys)


def conflicts(held: Iterable[str], wanted: Iterable[str]) -> bool:
    """True when both sides hold a value for the same unique field and the values differ."""
    mine, theirs = _by_alias(held), _by_alias(wanted)
    return any(alias in theirs and theirs[alias] != value for alias, value in mine.items())


class DeviceCache:
    """Devices by tracking id, as this process last read or wrote them (LRU of `size`).

    A merge needs no invalidation: a stale `contact_id` still resolves to the survivor through
    the merge records; the resolver then reads the device again (and keeps it, now the
    survivor's). An erased device still cached leads where a missing one does: its contact no
    longer resolves, so the visitor is new. Only an undone merge gives devices back to a contact
    a cached copy cannot know of: it is announced (`devices`, core/invalidation.py) and every
    process empties this cache."""

    def __init__(self, size: int = DEVICE_CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[str, Document] = OrderedDict()
        self.cleared = asyncio.Event()  # set by every clear (tests wait on it)

    def get(self, tracking_id: str) -> Document | None:
        device = self.entries.get(tracking_id)
        if device is not None:
            self.entries.move_to_end(tracking_id)
        return device

    def put(self, device: Document) -> None:
        self.entries[device["_id"]] = device
        self.entries.move_to_end(device["_id"])
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def drop(self, tracking_id: str) -> None:
        self.entries.pop(tracking_id, None)

    def clear(self) -> None:
        self.entries.clear()
        self.cleared.set()


class IdentityResolver:
    def __init__(self, storage: Storage, *, track_by_ip: bool) -> None:
        self.storage = storage
        self.track_by_ip = track_by_ip
        self.devices = DeviceCache()

    async def device(self, tracking_id: str) -> Document | None:
        device = self.devices.get(tracking_id)
        if device is None:
            device = await self.storage.devices.get(tracking_id)
            if device is not None:
                self.devices.put(device)
        return device

    async def current(
        self, tracking_id: str | None, contact_cookie: str | None
    ) -> tuple[Document | None, Document | None]:
        """The visitor the cookies point at, and their device."""
        contacts = self.storage.contacts
        if tracking_id:
            device = await self.device(tracking_id)
            if device is not None:
                contact = await contacts.resolve(device["contact_id"], cached=True)
                if contact is not None:
                    if contact["_id"] != device["contact_id"]:  # moved by a merge: read it again
                        self.devices.drop(tracking_id)
                        fresh = await self.storage.devices.get(tracking_id)
                        if fresh is not None:
                            self.devices.put(fresh)
                            device = fresh
                    return contact, device if contact["_id"] == device["contact_id"] else None
        if contact_cookie and len(contact_cookie) <= MAX_CONTACT_COOKIE:
            contact = await contacts.resolve(contact_cookie, cached=True)
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
        names_unique: bool = False,
    ) -> Visitor:
        """`names_unique`: the request named a unique field, verified or not (never identified
        by IP then: an unverified claim must not reach the contact last seen from that IP)."""
        current, device = await self.current(tracking_id, contact_cookie)
        activities: list[Activity] = []
        if current is None and not unique_keys and not names_unique:
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
                    try:
                        contact, merged = await merge(self.storage, winner=known, loser=current, now=now)
                    except MergeInProgress:  # another request merges one of them right now:
                        contact, device = known, None  # this visit goes to the known contact
                    else:
                        activities.append(merged)
                        self.devices.clear()  # the loser's devices moved
                        if device is not None:
                            device = {**device, "contact_id": contact["_id"]}
            elif current is not None and conflicts(current.get("ids", []), unique_keys):
                # The visitor is known under another email: a new contact, rather than overwriting it.
                contact, device = None, None
        if contact is None or (device is not None and device["contact_id"] != contact["_id"]):
            device = None
        return Visitor(contact, device, activities)

    async def device_for(
        self,
        contact_id: str,
        user_agent: Mapping[str, str],
        fingerprint: Mapping[str, object],
        now: dt.datetime,
        *,
        new_contact: bool,
    ) -> tuple[Document, bool]:
        """A device of this contact for this browser: a similar existing one (False), or a new
        one, not written yet (True): the caller writes it with the visit (`Storage.store_visit`)
        and then puts it in `devices`."""
        if not new_contact:
            similar = await self.storage.devices.find_similar(contact_id, user_agent)
            if similar is not None:
                self.devices.put(similar)
                return similar, False
        return self.storage.devices.draft(contact_id, now, user_agent, fingerprint), True


async def sweep_merged(storage: Storage, contact_ids: Iterable[str]) -> int:
    """Move to the survivor what was just written under a contact that a merge has removed
    (a hit resolved to the loser a moment before the merge, stored a moment after). Called after
    every stored batch of hits and devices and every write of timeline entries, so no write can
    stay under a merged-away id: `merge` writes its merge record before it moves anything, so a
    write is either there when the merge moves (moved by it) or stored before this check reads
    the merge records (moved here). Returns how many merged ids it found."""
    winners = await storage.contacts.winners_of(contact_ids)
    for loser in winners:

        async def move(session: Session, loser: str = loser) -> None:
            # Read again inside the transaction: an undo committed since gave the id back.
            current = (await storage.contacts.winners_of([loser], session=session)).get(loser)
            if current is not None:
                await storage.devices.move(loser, current, session=session)
                await storage.hits.move(loser, current, session=session)
                await storage.activities.move(loser, current, session=session)

        await in_transaction(storage, move)
    return len(winners)


T = TypeVar("T")
# IllegalOperation: a standalone mongod ("Transaction numbers are only allowed on a replica set
# member or mongos").
NO_TRANSACTIONS = 20


async def in_transaction(storage: Storage, steps: Callable[[Session], Awaitable[T]]) -> T:
    """`steps` in one MongoDB transaction (retried on transient errors as the driver does), or,
    on a deployment without transactions, one write after the other (session None)."""
    try:
        async with storage.client.start_session() as session:
            return await session.with_transaction(steps)
    except OperationFailure as exc:
        if exc.code != NO_TRANSACTIONS:
            raise
    return await steps(None)


def being_merged(contact: Document, now: dt.datetime) -> bool:
    mark = contact.get("merging")
    return isinstance(mark, dict) and now - mark["since"] < dt.timedelta(seconds=MERGE_LOCK_SECONDS)


# The safety net behind the sweeps after each write and after each merge's commit (which a
# failure can skip): every SWEEP_EVERY, what is under an id merged in the last SWEEP_WINDOW moves.
SWEEP_EVERY = 60.0
SWEEP_WINDOW = dt.timedelta(minutes=15)


async def sweep_recent_merges(storage: Storage, now: dt.datetime) -> int:
    """Move to their survivors the documents under ids merged away since `now - SWEEP_WINDOW`."""
    return await sweep_merged(storage, await storage.contacts.merged_since(now - SWEEP_WINDOW))


async def sweep_forever(storage: Storage) -> None:
    """Runs for the life of the app (docs/identity.md, "Writes racing a merge")."""
    while True:
        await asyncio.sleep(SWEEP_EVERY)
        try:
            await sweep_recent_merges(storage, now_ms())
        except Exception:  # the next round tries again
            log.exception("sweeping recent merges failed")


def merged_values(winner: Document, loser: Document, now: dt.datetime) -> dict[str, object]:
    """What a merge sets on the winner: the loser's values fill the winner's gaps (winner values
    stay), and the winner is identified when either side was or the merged fields make it so."""
    mine = winner.get("fields", {})
    filled = {
        alias: value for alias, value in loser.get("fields", {}).items() if mine.get(alias) in (None, "")
    }
    values: dict[str, object] = {f"fields.{alias}": value for alias, value in filled.items()}
    merged_fields = {**mine, **filled}
    identified = (
        not winner.get("anonymous", True) or not loser.get("anonymous", True) or is_identified(merged_fields)
    )
    values["anonymous"] = not identified
    if identified:
        times = [t for t in (winner.get("identified_at"), loser.get("identified_at")) if t is not None]
        values["identified_at"] = min(times) if times else now
    return values


async def merge(
    storage: Storage, *, winner: Document, loser: Document, now: dt.datetime
) -> tuple[Document, Activity]:
    """Move the loser's history to the winner and keep the loser's id resolving to it. Returns
    the winner as it is after the merge, and the `contact_merged` activity for the caller to record.

    The writes are one transaction where the deployment supports it; otherwise they are ordered
    so that an interruption leaves every id resolvable: the merge record first, then the moves,
    then the loser is deleted (docs/identity.md, "Merges"). Before anything, the loser is marked
    and the winner must be unmarked: of two merges of the same two contacts in opposite
    directions, at most one goes on; the other raises `MergeInProgress` and changes nothing (each
    marks before it reads the other's mark, so both cannot read "unmarked"). Both contacts are
    read again inside the transaction, so a write to either since the caller read them is merged,
    not lost, and a winner deleted or marked meanwhile (a chain of merges) aborts the merge.
    """
    winner_id, loser_id = winner["_id"], loser["_id"]
    locked_at = now_ms()  # the clock, not `now` (a replayed hit's time is in the past)
    merge_id = ObjectId()  # also the token of the mark: only this merge removes it
    if not await storage.contacts.lock_for_merge(loser_id, winner_id, locked_at, token=merge_id):
        raise MergeInProgress("this contact is being merged by another request; try again")
    written = False  # without a transaction: a failure after the first write keeps the mark

    async def steps(session: Session) -> tuple[Document | None, dict[str, int], Document]:
        """The writes of the merge; all or none of them in a transaction (`session`)."""
        contacts = storage.contacts
        marked = await contacts.get(loser_id, session=session)
        winner = await contacts.get(winner_id, session=session)
        mark = (marked or {}).get("merging") or {}
        if (
            marked is None
            or winner is None
            or mark.get("token") != merge_id
            or being_merged(winner, locked_at)
        ):
            raise MergeInProgress("the contact to merge into is being merged by another request; try again")
        # Both as they are now (the loser without its mark): what the merge log keeps.
        loser = {key: value for key, value in marked.items() if key != "merging"}
        repointed = await contacts.merged_into(loser_id, session=session)
        values = merged_values(winner, loser, now)
        nonlocal written
        written = session is None
        # The record's time is the clock's (the periodic sweep looks at recent ones).
        await contacts.record_merge(loser["_id"], winner["_id"], locked_at, session=session)
        moved = {
            "devices": await storage.devices.move(loser["_id"], winner["_id"], session=session),
            "hits": await storage.hits.move(loser["_id"], winner["_id"], session=session),
            "activities": await storage.activities.move(loser["_id"], winner["_id"], session=session),
        }
        merged = await contacts.absorb(winner["_id"], loser, now, values, session=session)
        await contacts.delete(loser["_id"], session=session)
        adopted: list[str] = []
        if loser.get("ids"):  # only now: the unique index allowed one holder per key
            adopted = await contacts.adopt_ids(winner["_id"], loser["ids"], session=session)
            merged = await contacts.get(winner["_id"], session=session)
        held_tags = set(winner.get("tags", []))
        entry = {
            "_id": merge_id,
            "winner_id": winner["_id"],
            "loser_id": loser["_id"],
            "merged_at": now,
            "loser": loser,
            "winner_before": {key: winner.get(key) for key in ("anonymous", "identified_at", "created_at")},
            "filled": [key.removeprefix("fields.") for key in values if key.startswith("fields.")],
            "tags_added": [tag for tag in loser.get("tags", []) if tag not in held_tags],
            "adopted_ids": adopted,
            "repointed": repointed,
            "moved": moved,
            "undone_at": None,
        }
        await contacts.log_merge(entry, session=session)
        audit = {"merge_id": merge_id, "winner_id": winner["_id"], "loser_id": loser["_id"]}
        audit |= {"hits_moved": moved["hits"], "devices_moved": moved["devices"]}
        await storage.audit.log("merge", now, audit, session=session)
        return merged, moved, winner

    try:
        merged, moved, winner = await in_transaction(storage, steps)
    except BaseException:
        if not written:  # nothing of it stands: the loser is not being merged any more
            with contextlib.suppress(Exception):
                await storage.contacts.unlock_merge(loser_id, token=merge_id)
        raise
    # After the commit: what a racing write stored under the loser while the transaction was
    # open (invisible to it, and to the check after that write) moves now; the caches forget
    # what they read while it was open.
    await sweep_merged(storage, [loser_id])
    await storage.contacts.changed(winner_id, loser_id)
    hits, devices = moved["hits"], moved["devices"]
    activity = Activity(
        "contact_merged",
        winner["_id"],
        now,
        {"merged_id": loser_id, "merge_id": str(merge_id), "hits_moved": hits, "devices_moved": devices},
    )
    return (merged if merged is not None else winner), activity
