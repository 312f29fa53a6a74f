"""A contact's timeline: page hits, UTM records and stored activities, merged newest first."""

from __future__ import annotations

from collections.abc import Iterable

from contact_monitor.core.activity import STORED_TYPES, TIMELINE_TYPES
from contact_monitor.storage import Storage
from contact_monitor.storage.documents import Document
from resolvers.pagination import decode_cursor, encode_cursor


async def timeline_page(
    storage: Storage, contact_id: str, *, first: int, after: str | None, kinds: Iterable[str] | None
) -> tuple[list[tuple[str, Document]], bool]:
    """Up to `first` (kind, document) pairs after the cursor, and whether more follow.

    Each source is asked for `first + 1` entries before the cursor; the merge of the three keeps
    the newest `first`, ordered by (time, id) - ids are ObjectIds, unique across the collections.
    """
    wanted = set(TIMELINE_TYPES if kinds is None else kinds)
    before = decode_cursor(after, object_id=True)
    limit = first + 1
    entries: list[tuple[str, Document]] = []
    if "page_hit" in wanted:
        entries += [
            ("page_hit", doc)
            for doc in await storage.hits.for_contact(contact_id, before=before, limit=limit)
        ]
    if "utm_recorded" in wanted:
        docs = await storage.hits.utm_for_contact(contact_id, before=before, limit=limit)
        entries += [("utm_recorded", doc) for doc in docs]
    activity_kinds = [kind for kind in STORED_TYPES if kind in wanted]
    if activity_kinds:
        docs = await storage.activities.for_contact(
            contact_id, types=activity_kinds, before=before, limit=limit
        )
        entries += [(doc["type"], doc) for doc in docs]
    entries.sort(key=lambda entry: (entry[1]["occurred_at"], entry[1]["_id"]), reverse=True)
    return entries[:first], len(entries) > first


def cursor_of(doc: Document) -> str:
    return encode_cursor(doc["occurred_at"], doc["_id"])
