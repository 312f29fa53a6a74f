"""`Services`: what the app's lifespan opens, handed to every adapter (tracking endpoints, GraphQL
resolvers, the CLI's operations). Built by the composition root (`contact_monitor.app`)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from contact_monitor.core.activity import ActivityPublisher, ActivityRecorder
from contact_monitor.core.automation import Automation
from contact_monitor.core.fields import FieldRegistry
from contact_monitor.core.identity import sweep_merged
from contact_monitor.core.invalidation import Invalidations
from contact_monitor.core.metrics import Metrics
from contact_monitor.core.rules import RuleEngine
from contact_monitor.core.traffic import TrafficLog
from contact_monitor.core.webhooks import DeliveryPolicy, Webhooks
from contact_monitor.settings import Settings
from contact_monitor.storage import Storage
from contact_monitor.storage.documents import Document


@dataclass(frozen=True)
class Services:
    settings: Settings
    storage: Storage
    redis: Redis
    publisher: ActivityPublisher
    recorder: ActivityRecorder
    fields: FieldRegistry
    metrics: Metrics
    invalidations: Invalidations
    rules: RuleEngine
    webhooks: Webhooks
    automation: Automation
    traffic: TrafficLog

    @classmethod
    def open(cls, settings: Settings, storage: Storage, redis: Redis) -> Services:
        publisher = ActivityPublisher(
            redis,
            settings.stream_key,
            settings.stream_maxlen,
            settings.online_key,
            outbox=storage.outbox,
            prefix=settings.redis_prefix,
        )
        recorder = ActivityRecorder(storage, publisher)

        async def sweep(documents: list[Document]) -> None:
            await sweep_merged(storage, {d["contact_id"] for d in documents if "contact_id" in d})

        # Writes naming a contact that a concurrent merge removed end on the survivor.
        storage.writes.after_write = sweep
        storage.hit_writes.after_write = sweep
        recorder.after_write = sweep
        fields = FieldRegistry(storage, settings.field_cache_seconds)
        invalidations = Invalidations(redis, settings.redis_prefix, fields, storage.contacts.cache)
        storage.contacts.announce = invalidations.announce_contacts
        rules = RuleEngine(storage, recorder)
        webhooks = Webhooks(
            storage,
            DeliveryPolicy(
                timeout_seconds=settings.webhook_timeout_seconds,
                retry_seconds=settings.webhook_retry_seconds,
                max_attempts=settings.webhook_max_attempts,
                disable_after=settings.webhook_disable_after,
                allow_private=settings.webhook_allow_private,
            ),
        )
        automation = Automation(
            redis,
            settings.stream_key,
            rules,
            webhooks,
            claim_idle_seconds=settings.automation_claim_seconds,
            linger=settings.automation_linger_ms / 1000,
        )
        return cls(
            settings=settings,
            storage=storage,
            redis=redis,
            publisher=publisher,
            recorder=recorder,
            fields=fields,
            metrics=Metrics(),
            invalidations=invalidations,
            rules=rules,
            webhooks=webhooks,
            automation=automation,
            traffic=TrafficLog(redis, settings.redis_prefix),
        )
