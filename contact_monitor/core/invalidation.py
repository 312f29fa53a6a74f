"""What one process changes, the others forget: the Redis channel `<prefix>invalidate`.

Two caches depend on it (docs/caches.md):
- the field registry (`FieldRegistry`): message `fields`, sent by `createField`/`updateField` and
  by the CLI; its time (CM_FIELD_CACHE_SECONDS) is the fallback when Redis cannot carry it;
- the contacts of the tracking hot path (`ContactCache`): message `contacts @<origin> <id> <id>
  ...` (or `contacts @<origin> *`), sent after every write through `ContactRepository`; a process
  ignores its own messages (it dropped or replaced the entries when it wrote; an echo would only
  throw away what it cached since). This cache has no time
  fallback: it is used only while this process hears the channel. It is emptied and turned off
  when the subscription is lost, or silent for SILENT_SECONDS (a paused Redis answers no PING),
  and turned on again, empty, once the channel answers.

A field change also empties the contact cache (making a field unique re-keys contacts).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from contact_monitor.core.fields import FieldRegistry
from contact_monitor.storage.contacts import ANY_CONTACT, ContactCache

log = logging.getLogger("contact_monitor.invalidation")


class Clearable(Protocol):
    def clear(self) -> None: ...


FIELDS_CHANGED = "fields"
CONTACTS_CHANGED = "contacts"
DEVICES_CHANGED = "devices"
# The channel is pinged this often; after SILENT_SECONDS without any answer the contact cache is off.
PING_SECONDS = 1.0
SILENT_SECONDS = 3.0
# Contact ids waiting to be announced beyond this many are announced as "any contact".
MAX_PENDING = 5_000


def invalidation_channel(prefix: str) -> str:
    return f"{prefix}invalidate"


async def announce_field_change(redis: Redis, prefix: str) -> None:
    """Tell every server process (best effort: without Redis the registry's time still applies)."""
    try:
        await redis.publish(invalidation_channel(prefix), FIELDS_CHANGED)
    except RedisError:
        log.warning("could not announce a field change; processes see it within their cache time")


class Invalidations:
    """This process's end of the channel: announces the contacts it changed (in one message per
    event-loop turn, retried until Redis takes it) and follows what the others announce."""

    def __init__(self, redis: Redis, prefix: str, registry: FieldRegistry, contacts: ContactCache) -> None:
        self.redis = redis
        self.channel = invalidation_channel(prefix)
        self.registry = registry
        self.contacts = contacts
        # Names this process in its `contacts` messages (it skips its own).
        self.origin = uuid.uuid4().hex[:16]
        self._pending: dict[str, None] = {}
        self._sender: asyncio.Task[None] | None = None
        # The device caches of this process (the ingest pipeline registers its own): emptied on
        # a `devices` message, sent when an undone merge gave devices back to their contact.
        self.device_caches: list[Clearable] = []

    async def announce_devices_moved(self) -> None:
        """Devices changed contact other than by a merge (an undone merge): every process
        forgets the devices it holds. Best effort, as for fields."""
        self._devices_moved()
        try:
            await self.redis.publish(self.channel, DEVICES_CHANGED)
        except RedisError:
            log.warning("could not announce moved devices; other processes may send a few hits astray")

    def _devices_moved(self) -> None:
        for cache in self.device_caches:
            cache.clear()

    async def announce_contacts(self, ids: Sequence[str]) -> None:
        """`ContactRepository.announce`: queued, sent by a task of its own (the write that
        changed them does not wait for Redis)."""
        for contact_id in ids:
            self._pending[contact_id] = None
        if len(self._pending) > MAX_PENDING:
            self._pending = {ANY_CONTACT: None}
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(
                self._send(), name="contact-invalidations", context=contextvars.Context()
            )

    async def _send(self) -> None:
        delay = 0.05
        while self._pending:
            ids = [ANY_CONTACT] if ANY_CONTACT in self._pending else list(self._pending)
            self._pending = {}
            try:
                await self.redis.publish(self.channel, " ".join([CONTACTS_CHANGED, f"@{self.origin}", *ids]))
                delay = 0.05
            except RedisError as exc:
                log.warning("could not announce changed contacts (%s); retrying", exc)
                for contact_id in ids:
                    self._pending.setdefault(contact_id, None)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        """Send what is queued (at most a few seconds), then stop."""
        if self._sender is not None and not self._sender.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), 5)
            except TimeoutError:
                self._sender.cancel()

    def _heard(self, data: object) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        kind, _, rest = text.partition(" ")
        if kind == FIELDS_CHANGED:
            self.registry.invalidate()
            self.contacts.drop([ANY_CONTACT])
        elif kind == CONTACTS_CHANGED:
            ids = rest.split()
            if ids and ids[0].startswith("@"):  # its sender (ids never start with @)
                if ids[0] == f"@{self.origin}":
                    return
                ids = ids[1:]
            self.contacts.drop(ids)
        elif kind == DEVICES_CHANGED:
            self._devices_moved()

    async def follow(self) -> None:
        """Runs for the life of the app."""
        delay = 0.1
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                log.debug("invalidation channel lost: %s", exc)
            finally:
                self.contacts.disable()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        subscribed = False
        while True:
            message = await pubsub.get_message(timeout=PING_SECONDS)
            now = loop.time()
            if message is not None:
                heard = now
                kind = message.get("type")
                if kind in ("subscribe", b"subscribe"):
                    subscribed = True
                    self.registry.invalidate()  # changes made while not subscribed
                elif kind in ("message", b"message"):
                    self._heard(message.get("data"))
                if subscribed and not self.contacts.enabled:
                    self.contacts.enable()
            elif now - heard > SILENT_SECONDS and self.contacts.enabled:
                log.warning("invalidation channel silent for %.0f s: contact cache off", now - heard)
                self.contacts.disable()
            if now - pinged >= PING_SECONDS:
                await pubsub.ping()
                pinged = now
