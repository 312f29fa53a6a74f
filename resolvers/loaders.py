"""DataLoaders: a page of contacts costs one query per relation, not one per contact.

Relations with arguments (`hits(first, after)`, `timeline(...)`) are loaded by (contact id,
arguments): the contacts of one page asking with the same arguments share one aggregation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from contact_monitor.storage import Storage
from contact_monitor.storage.documents import Cursor, Document
from resolvers.timeline import TimelinePage, timeline_pages

P = TypeVar("P", bound=Hashable)
HitArguments = tuple[int, Cursor | None]  # (limit, before)
TimelineArguments = tuple[int, Cursor | None, tuple[str, ...] | None]  # (first, before, kinds)
V = TypeVar("V")
MAX_LIST = 100


def by_arguments(
    fetch: Callable[[list[str], P], Awaitable[dict[str, V]]], default: Callable[[], V]
) -> Callable[[list[tuple[str, P]]], Awaitable[list[V]]]:
    """A batch function for keys (contact id, arguments): one `fetch` per distinct arguments."""

    async def load(keys: list[tuple[str, P]]) -> list[V]:
        groups: dict[P, list[str]] = {}
        for contact_id, arguments in keys:
            groups.setdefault(arguments, []).append(contact_id)
        found: dict[tuple[str, P], V] = {}
        for arguments, contact_ids in groups.items():
            results = await fetch(contact_ids, arguments)
            for contact_id in contact_ids:
                found[(contact_id, arguments)] = results.get(contact_id, default())
        return [found[key] for key in keys]

    return load


class Loaders:
    """One set per request (the caches must not outlive it)."""

    def __init__(self, storage: Storage) -> None:
        async def devices(contact_ids: list[str]) -> list[list[Document]]:
            found = await storage.devices.for_contacts(contact_ids)
            return [found.get(contact_id, []) for contact_id in contact_ids]

        async def last_hits(contact_ids: list[str]) -> list[Document | None]:
            found = await storage.hits.latest_for_contacts(contact_ids)
            return [found.get(contact_id) for contact_id in contact_ids]

        async def contacts(contact_ids: list[str]) -> list[Document | None]:
            found = await storage.contacts.many(contact_ids)
            return [found.get(contact_id) for contact_id in contact_ids]

        async def devices_by_id(tracking_ids: list[str]) -> list[Document | None]:
            found = await storage.devices.many(tracking_ids)
            return [found.get(tracking_id) for tracking_id in tracking_ids]

        async def hit_counts(contact_ids: list[str]) -> list[int]:
            found = await storage.hits.counts_for_contacts(contact_ids)
            return [found.get(contact_id, 0) for contact_id in contact_ids]

        async def ips(contact_ids: list[str]) -> list[list[str]]:
            found = await storage.hits.ips_for_contacts(contact_ids, MAX_LIST)
            return [found.get(contact_id, []) for contact_id in contact_ids]

        async def hit_pages(
            ids: list[str], arguments: tuple[int, Cursor | None]
        ) -> dict[str, list[Document]]:
            limit, before = arguments
            return await storage.hits.pages_for_contacts(ids, before=before, limit=limit)

        async def utm_pages(ids: list[str], limit: int) -> dict[str, list[Document]]:
            return await storage.hits.pages_for_contacts(ids, before=None, limit=limit, utm=True)

        async def timelines(ids: list[str], arguments: TimelineArguments) -> dict[str, TimelinePage]:
            first, before, kinds = arguments
            return await timeline_pages(storage, ids, first=first, before=before, kinds=kinds)

        async def left(keys: list[tuple[Any, str, dt.datetime]]) -> list[dt.datetime | None]:
            hits = [{"_id": key, "device_id": device, "occurred_at": at} for key, device, at in keys]
            found = await storage.hits.next_times(hits)
            return [found.get(key) for key, _, _ in keys]

        async def device_last_hits(device_ids: list[str]) -> list[dt.datetime | None]:
            found = await storage.hits.last_times(device_ids)
            return [found.get(device_id) for device_id in device_ids]

        self.devices = DataLoader(load_fn=devices)
        # A hit's time on page: when its device's next hit came (hits are written once).
        self.left_at = DataLoader(load_fn=left)
        self.device_last_hit = DataLoader(load_fn=device_last_hits)
        self.last_hit = DataLoader(load_fn=last_hits)
        self.contact = DataLoader(load_fn=contacts)
        self.device = DataLoader(load_fn=devices_by_id)
        self.hit_count = DataLoader(load_fn=hit_counts)
        self.ips = DataLoader(load_fn=ips)
        self.hits = DataLoader(load_fn=by_arguments(hit_pages, list))
        self.utm = DataLoader(load_fn=by_arguments(utm_pages, list))
        self.timeline: DataLoader[
            tuple[str, tuple[int, Cursor | None, tuple[str, ...] | None]], TimelinePage
        ] = DataLoader(load_fn=by_arguments(timelines, lambda: ([], False)))
