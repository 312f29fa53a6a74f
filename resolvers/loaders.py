"""DataLoaders: a page of contacts costs one query per relation, not one per contact."""

from __future__ import annotations

from strawberry.dataloader import DataLoader

from contact_monitor.storage import Storage
from contact_monitor.storage.documents import Document


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

        self.devices = DataLoader(load_fn=devices)
        self.last_hit = DataLoader(load_fn=last_hits)
        self.contact = DataLoader(load_fn=contacts)
        self.device = DataLoader(load_fn=devices_by_id)
