"""`Storage`: the repositories over one MongoDB database, opened and closed by the app lifespan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.activities import ActivityRepository
from contact_monitor.storage.api_keys import ApiKeyRepository
from contact_monitor.storage.audit import AuditRepository
from contact_monitor.storage.batch import InsertBatcher
from contact_monitor.storage.contacts import ContactRepository
from contact_monitor.storage.devices import DeviceRepository
from contact_monitor.storage.documents import Document
from contact_monitor.storage.fields import FieldRepository
from contact_monitor.storage.forms import FormRepository
from contact_monitor.storage.hits import HitRepository
from contact_monitor.storage.outbox import OutboxRepository
from contact_monitor.storage.rules import RuleRepository
from contact_monitor.storage.tags import TagRepository
from contact_monitor.storage.webhooks import WebhookRepository

# Defaults for options the URI does not set itself. Our writes are idempotent per request, and
# retryable writes collapse SecantusDB's throughput; a request waits at most 10 s for a server.
DEFAULT_URI_OPTIONS = {"retryWrites": "false", "serverSelectionTimeoutMS": "10000"}


def with_driver_options(uri: str) -> str:
    """The URI with DEFAULT_URI_OPTIONS added where it does not set them (its own values win)."""
    lowered = uri.lower()
    for name, value in DEFAULT_URI_OPTIONS.items():
        if f"{name.lower()}=" in lowered:
            continue
        separator = "&" if "?" in uri.split("/", 3)[-1] else ("?" if uri.count("/") >= 3 else "/?")
        uri = f"{uri}{separator}{name}={value}"
    return uri


@dataclass(frozen=True)
class Storage:
    client: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    contacts: ContactRepository
    devices: DeviceRepository
    hits: HitRepository
    tags: TagRepository
    fields: FieldRepository
    audit: AuditRepository
    activities: ActivityRepository
    api_keys: ApiKeyRepository
    forms: FormRepository
    outbox: OutboxRepository
    rules: RuleRepository
    webhooks: WebhookRepository
    # The hot path's group commits (storage/batch.py), two lanes with one batch in flight each:
    # `writes` for visits that bring a new contact or device (the new contacts, then the new
    # devices, then their hits, one insert_many each per batch), `hit_writes` for the hits of
    # known visitors, which need not wait behind them.
    writes: InsertBatcher
    hit_writes: InsertBatcher

    @classmethod
    def connect(
        cls,
        uri: str,
        database: str,
        *,
        event_listeners: Sequence[Any] = (),
        contact_cache_size: int = 0,
    ) -> Storage:
        """`event_listeners`: PyMongo command/pool monitoring hooks (metrics, tests counting
        queries). `contact_cache_size`: contacts kept for the tracking hot path (0: none; the
        server turns the cache on only while it hears the invalidation channel)."""
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            with_driver_options(uri),
            tz_aware=True,
            event_listeners=list(event_listeners),
        )
        db = client[database]
        writes = InsertBatcher(db["contacts"], db["devices"], db["hits"])
        hit_writes = InsertBatcher(db["hits"])
        return cls(
            client=client,
            db=db,
            contacts=ContactRepository(db, cache_size=contact_cache_size, inserts=writes),
            devices=DeviceRepository(db),
            hits=HitRepository(db),
            tags=TagRepository(db),
            fields=FieldRepository(db),
            audit=AuditRepository(db),
            activities=ActivityRepository(db),
            api_keys=ApiKeyRepository(db),
            forms=FormRepository(db),
            outbox=OutboxRepository(db),
            rules=RuleRepository(db),
            webhooks=WebhookRepository(db),
            writes=writes,
            hit_writes=hit_writes,
        )

    async def create_indexes(self, *, by_ip: bool = False) -> None:
        """`by_ip`: with the index that IP matching reads (`ContactRepository.create_indexes`)."""
        await self.contacts.create_indexes(by_ip=by_ip)
        for repository in (
            self.devices,
            self.hits,
            self.tags,
            self.fields,
            self.audit,
            self.activities,
            self.api_keys,
            self.forms,
            self.rules,
            self.webhooks,
        ):
            await repository.create_indexes()

    async def store_visit(
        self, *, contact: Document | None = None, device: Document | None = None, hit: Document | None = None
    ) -> None:
        """A visit's new documents in one group commit round: the contact, then the device, then
        the hit, each only once the ones before it are stored (nothing names a contact or device
        that could not be written). The contact is cached as written. A known visitor's hit
        alone goes to the lane of such hits."""
        parts = [
            (collection, document)
            for collection, document in ((self.devices.devices, device), (self.hits.hits, hit))
            if document is not None
        ]
        if contact is not None:
            await self.contacts.add(contact, then=parts)
        elif device is not None:
            await self.writes.insert_together(parts)
        elif parts:
            await self.hit_writes.insert_together(parts)

    def batchers(self) -> tuple[InsertBatcher, ...]:
        """The group commits of the hot path (storage/batch.py)."""
        return (self.writes, self.hit_writes)

    async def close(self) -> None:
        """Write the inserts still pending (group commit), then close the client."""
        for batcher in self.batchers():
            await batcher.close()
        await self.client.close()
