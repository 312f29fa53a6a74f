"""Contacts' timelines: page hits, UTM records and stored activities, merged newest first, for a
whole page of contacts at once (three aggregations, whatever the number of contacts)."""

from __future__ import annotations

from collections.abc import Iterable

from contact_monitor.core.activity import STORED_TYPES, TIMELINE_TYPES
from contact_monitor.storage import Storage
from contact_monitor.storage.documents import Cursor, Document
from resolvers.pagination import encode_cursor

TimelinePage = tuple[list[tuple[str, Document]], bool]


async def timeline_pages(
    storage: Storage,
    contact_ids: list[str],
    *,
    first: int,
    before: Cursor | None,
    kinds: Iterable[str] | None,
) -> dict[str, TimelinePage]:
    """For each contact, up to `first` (kind, document) pairs after the cursor, and whether more
    follow.

    Each source is asked for `first + 1` entries per contact before the cursor; the merge keeps
    the newest `first`, ordered by (time, id) - ids are ObjectIds, unique across the collections.
    """
    wanted = set(TIMELINE_TYPES if kinds is None else kinds)
    limit = first + 1
    entries: dict[str, list[tuple[str, Document]]] = {contact_id: [] for contact_id in contact_ids}
    if "page_hit" in wanted:
        hits = await storage.hits.pages_for_contacts(contact_ids, before=before, limit=limit)
        for contact_id, docs in hits.items():
            entries[contact_id] += [("page_hit", doc) for doc in docs]
    if "utm_recorded" in wanted:
        utm = await storage.hits.pages_for_contacts(contact_ids, before=before, limit=limit, utm=True)
        for contact_id, docs in utm.items():
            entries[contact_id] += [("utm_recorded", doc) for doc in docs]
    activity_kinds = [kind for kind in STORED_TYPES if kind in wanted]
    if activity_kinds:
        found = await storage.activities.pages_for_contacts(
            contact_ids, types=activity_kinds, before=before, limit=limit
        )
        for contact_id, docs in found.items():
            entries[contact_id] += [(doc["type"], doc) for doc in docs]
    pages: dict[str, TimelinePage] = {}
    for contact_id, merged in entries.items():
        merged.sort(key=lambda entry: (entry[1]["occurred_at"], entry[1]["_id"]), reverse=True)
        pages[contact_id] = (merged[:first], len(merged) > first)
    return pages


def cursor_of(doc: Document) -> str:
    return encode_cursor(doc["occurred_at"], doc["_id"])
