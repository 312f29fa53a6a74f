"""Webhooks: each stream event of a webhook's types is POSTed to its URL, signed, retried with
backoff, and logged. Deliveries are queued in MongoDB by the stream consumer
(`contact_monitor.core.automation`), so they survive restarts, and sent by `WebhookSender`, which
never runs inside a tracking request. docs/automation.md.

    POST <url>
    Content-Type: application/json
    X-CM-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>
    X-CM-Delivery: <delivery id, the same on every attempt: deduplicate by it>
    X-CM-Event: <the event's type>

The body is the stream event's JSON, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
from pymongo.errors import PyMongoError

from contact_monitor import __version__
from contact_monitor.core.activity import ACTIVITY_TYPES, now_ms
from contact_monitor.core.errors import BadUserInput
from contact_monitor.core.loops import Worker
from contact_monitor.storage import Storage
from contact_monitor.storage.documents import Document
from contact_monitor.storage.redis_client import stop_if_cancelled

log = logging.getLogger(__name__)

MAX_WEBHOOKS = 50
MAX_URL = 2048
MIN_SECRET = 16
MAX_SECRET = 256
MAX_BACKOFF_SECONDS = 3600.0
MAX_ERROR_TEXT = 300
CONCURRENT_DELIVERIES = 10
DUE_BATCH = 50
WEBHOOKS_CACHE_SECONDS = 1.0
# A first attempt made by the stream consumer waits this long at most; a receiver slower than that
# gets its deliveries from the sender (with the full CM_WEBHOOK_TIMEOUT_SECONDS) for SLOW_SECONDS.
INLINE_SECONDS = 1.0
INLINE_BATCH_SECONDS = 2.0
SLOW_SECONDS = 60.0
SLOW = "slow"
DELIVERY_RETENTION = dt.timedelta(days=30)
SWEEP_SECONDS = 3600.0


def signature(secret: str, body: bytes) -> str:
    """The X-CM-Signature header's value."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def private_address(host: str) -> bool:
    """Loopback, private, link-local, reserved or unspecified: inside the network, not a
    receiver on the internet."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return host.lower().rstrip(".") in ("localhost", "localhost.localdomain") or host.lower().endswith(
            ".localhost"
        )
    return not address.is_global or address.is_multicast


def validate_webhook(url: str, types: Sequence[str], secret: str, *, allow_private: bool = False) -> Document:
    """The stored form of a new webhook (without id and times), or `BadUserInput`."""
    url = (url or "").strip()
    refused = BadUserInput(f"url must be an http:// or https:// URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises ValueError for a bad port)
        host.encode("idna")  # a label over 63 characters, an empty label...
    except (ValueError, UnicodeError):
        raise refused from None
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not host:
        raise refused
    if parts.username is not None or parts.password is not None:
        raise BadUserInput("url must not carry credentials; verify the X-CM-Signature header instead")
    if not allow_private and private_address(host):
        raise BadUserInput(
            f"url points inside the network ({host}); set CM_WEBHOOK_ALLOW_PRIVATE=true to allow "
            "loopback and private addresses"
        )
    if not types:
        raise BadUserInput("types must name at least one activity type")
    unknown = sorted({t for t in types if t not in ACTIVITY_TYPES})
    if unknown:
        raise BadUserInput(f"types: {', '.join(t.upper() for t in unknown)} is not an activity type")
    if not MIN_SECRET <= len(secret or "") <= MAX_SECRET:
        raise BadUserInput(
            f"secret must be {MIN_SECRET} to {MAX_SECRET} characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return {
        "url": url,
        "types": list(dict.fromkeys(types)),
        "secret": secret,
        "enabled": True,
        "consecutive_failures": 0,
        "disabled_at": None,
    }


class PublicResolver(aiohttp.abc.AbstractResolver):
    """The default resolver, without the addresses `private_address` names: a webhook's host
    name cannot lead inside the network (also not by changing its DNS answer later)."""

    def __init__(self) -> None:
        self.resolver = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        found = [a for a in await self.resolver.resolve(host, port, family) if not private_address(a["host"])]
        if not found:
            raise OSError(errno.EHOSTUNREACH, f"{host} resolves only to addresses inside the network")
        return found

    async def close(self) -> None:
        await self.resolver.close()


async def create_webhook(storage: Storage, spec: Document) -> Document:
    if await storage.webhooks.count() >= MAX_WEBHOOKS:
        raise BadUserInput(f"at most {MAX_WEBHOOKS} webhooks; delete one first")
    return await storage.webhooks.insert({**spec, "created_at": now_ms()})


@dataclass(frozen=True)
class DeliveryPolicy:
    """CM_WEBHOOK_*: how long an attempt may take, how retries back off, when to give up."""

    timeout_seconds: float = 5.0
    allow_private: bool = False  # CM_WEBHOOK_ALLOW_PRIVATE: receivers on loopback/private addresses
    retry_seconds: float = 10.0  # the first retry's delay; doubled each time, at most an hour
    max_attempts: int = 10  # then the delivery is `failed`
    disable_after: int = 20  # consecutive failed attempts of a webhook before it is disabled
    poll_seconds: float = 1.0  # how often due deliveries are looked for (queued ones wake it)

    def backoff(self, attempts: int) -> float:
        return float(min(self.retry_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


class Webhooks(Worker):
    """The webhooks of the deployment as this process knows them (read again every second, at
    once after a change made here), and their deliveries.

    New events are attempted by the stream consumer before it acknowledges their entries
    (`deliver`): each delivery is then written once, with its first attempt. Retries, and the
    deliveries of webhooks that are failing or disabled, wait in MongoDB for `send_forever`."""

    def __init__(self, storage: Storage, policy: DeliveryPolicy) -> None:
        super().__init__()
        self.storage = storage
        self.policy = policy
        self._hooks: list[Document] = []
        self._read_at: float | None = None
        self.wake = asyncio.Event()
        self.progress = asyncio.Event()  # set after each attempt (tests and tools wait on it)
        self.delivered = 0
        self.failed_attempts = 0
        self._client: aiohttp.ClientSession | None = None
        self.limit = asyncio.Semaphore(CONCURRENT_DELIVERIES)  # the sender's retries
        self.inline_limit = asyncio.Semaphore(CONCURRENT_DELIVERIES)  # the consumer's first attempts
        # Webhooks whose receiver did not answer a first attempt within INLINE_SECONDS: their
        # deliveries go to the sender for a while (the consumer never waits on a slow receiver).
        self._slow_until: dict[Any, float] = {}
        self._swept_at = 0.0

    def client(self) -> aiohttp.ClientSession:
        """aiohttp rather than httpx: ~280 against ~1,040 us of CPU per POST, measured here."""
        if self._client is None:
            resolver = None if self.policy.allow_private else PublicResolver()
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=resolver),
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout_seconds),
                headers={"User-Agent": f"contact-monitor/{__version__} (webhook)"},
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def forget(self) -> None:
        self._read_at = None
        self.wake.set()

    async def stop(self, task: asyncio.Task[None], grace: float = 10.0) -> None:
        self.wake.set()
        await super().stop(task, grace)

    async def hooks(self) -> list[Document]:
        clock = time.monotonic()
        if self._read_at is None or clock - self._read_at >= WEBHOOKS_CACHE_SECONDS:
            self._hooks = await self.storage.webhooks.all()
            self._read_at = clock
        return self._hooks

    async def deliveries_for(self, event: Mapping[str, Any], raw: bytes | str) -> list[Document]:
        """A delivery per webhook of the event's type (disabled ones too: they get their events
        when enabled again), not yet attempted nor stored; `raw` is the event's JSON, the body."""
        kind = event.get("type")
        activity_id = event.get("activity_id")
        hooks = [hook for hook in await self.hooks() if kind in hook.get("types", ())]
        if not activity_id or not hooks:
            return []
        body = raw.decode() if isinstance(raw, bytes) else raw
        now = now_ms()
        return [
            {
                "_id": f"{hook['_id']}:{activity_id}",
                "webhook_id": hook["_id"],
                "activity_id": str(activity_id),
                "contact_id": event.get("contact_id"),
                "type": kind,
                "body": body,
                "status": "pending",
                "attempts": [],
                "next_attempt_at": now,
                "created_at": now,
            }
            for hook in hooks
        ]

    @property
    def lease(self) -> dt.timedelta:
        """How long an attempt holds its delivery: other processes leave it alone meanwhile."""
        return dt.timedelta(seconds=self.policy.timeout_seconds + 30)

    async def deliver(self, deliveries: list[Document]) -> None:
        """First attempts of new deliveries, then one write of them all with their outcome
        (the caller acknowledges the stream entries after this: a crash before it sends them
        again, with the same X-CM-Delivery id). A first attempt waits INLINE_SECONDS at most;
        deliveries of a webhook that is disabled, failing or slow are stored for
        `send_forever` without an attempt here."""
        if not deliveries:
            return
        hooks = {hook["_id"]: hook for hook in await self.hooks()}
        clock = time.monotonic()
        healthy = {
            hook_id
            for hook_id, hook in hooks.items()
            if hook.get("enabled")
            and not hook.get("consecutive_failures")
            and self._slow_until.get(hook_id, 0.0) <= clock
        }
        now_first = [d for d in deliveries if d["webhook_id"] in healthy]
        inline = min(INLINE_SECONDS, self.policy.timeout_seconds)

        async def one(delivery: Document) -> tuple[Document, str | None]:
            async with self.inline_limit:
                return await self._post(hooks[delivery["webhook_id"]], delivery, within=inline)

        # The whole batch's first attempts end within INLINE_BATCH_SECONDS: those still running
        # are cut (the sender makes them again); the consumer never waits longer on receivers.
        tasks = [asyncio.ensure_future(one(d)) for d in now_first]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=INLINE_BATCH_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        failed: set[Any] = set()
        for delivery, task in zip(now_first, tasks, strict=True):
            # Cut short (cancelled) counts as slow; `_post` itself catches every error.
            attempt, error = ({}, SLOW) if task.cancelled() or task.exception() else task.result()
            if error == SLOW:  # not a failure: the sender tries again at once, with its full time
                self._slow_until[delivery["webhook_id"]] = clock + SLOW_SECONDS
                continue
            delivery["attempts"] = [attempt]
            if error is None:
                delivery.update(status="delivered", finished_at=attempt["at"])
                self.delivered += 1
            else:
                self.failed_attempts += 1
                failed.add(delivery["webhook_id"])
                self._after_failure(delivery, 1, attempt["at"])
        await self.storage.webhooks.queue(deliveries)
        for hook_id in failed:  # one failure per webhook and batch: a blip does not disable it
            await self._failed(hooks[hook_id], now_ms())
        if any(d["status"] == "pending" for d in deliveries):
            self.wake.set()
        self.progress.set()

    def _after_failure(self, delivery: Document, attempts: int, now: dt.datetime) -> None:
        if attempts >= self.policy.max_attempts:
            delivery.update(status="failed", finished_at=now)
        else:
            delivery.update(
                status="pending", next_attempt_at=now + dt.timedelta(seconds=self.policy.backoff(attempts))
            )

    async def send_forever(self) -> None:
        """Runs for the life of the app: attempts the due deliveries of enabled webhooks."""
        while not self.stopping.is_set():
            try:
                async with self.busy():
                    sent = await self.send_due()
            except PyMongoError:
                stop_if_cancelled()
                log.warning("webhook deliveries not read (MongoDB unavailable); retrying", exc_info=True)
                sent = 0
            if sent:
                continue  # more may be due
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.policy.poll_seconds)

    async def send_due(self) -> int:
        """Due deliveries of enabled webhooks, each claimed when its turn comes (another process
        may be looking at it too). Returns how many were attempted."""
        await self._sweep()
        hooks = {hook["_id"]: hook for hook in await self.hooks() if hook.get("enabled")}
        if not hooks:
            return 0
        due = await self.storage.webhooks.due(list(hooks), now_ms(), DUE_BATCH)
        failed: set[Any] = set()
        attempted = 0

        async def one(delivery: Document) -> None:
            nonlocal attempted
            async with self.limit:
                if not await self.storage.webhooks.claim(delivery, now_ms() + self.lease):
                    return  # another process took it
                attempted += 1
                if not await self.attempt(hooks[delivery["webhook_id"]], delivery):
                    failed.add(delivery["webhook_id"])

        await asyncio.gather(*(one(d) for d in due))
        for hook_id in failed:  # one failure per webhook and round
            await self._failed(hooks[hook_id], now_ms())
        return attempted

    async def _sweep(self) -> None:
        """Deliveries finished more than DELIVERY_RETENTION ago are deleted (hourly)."""
        clock = time.monotonic()
        if clock - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = clock
        gone = await self.storage.webhooks.delete_finished_before(now_ms() - DELIVERY_RETENTION)
        if gone:
            log.info("deleted %d webhook deliveries older than %s", gone, DELIVERY_RETENTION)

    async def _post(
        self, hook: Document, delivery: Document, *, within: float | None = None
    ) -> tuple[Document, str | None]:
        """One attempt: (its record, the error or None; SLOW when `within`, shorter than the
        policy's time, ran out)."""
        body = delivery["body"].encode()
        headers = {
            "Content-Type": "application/json",
            "X-CM-Signature": signature(hook["secret"], body),
            "X-CM-Delivery": str(delivery["_id"]),
            "X-CM-Event": str(delivery.get("type")),
        }
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        options: dict[str, Any] = {}
        if within is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=within)
        try:
            async with self.client().post(
                hook["url"], data=body, headers=headers, allow_redirects=False, **options
            ) as response:
                status_code = response.status
                await response.content.readany()  # at most one chunk: the answer is not used
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except TimeoutError:
            error = SLOW if within is not None else f"no answer within {self.policy.timeout_seconds:g} s"
        except (aiohttp.ClientError, OSError, ValueError, UnicodeError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")[:MAX_ERROR_TEXT]
        except Exception as exc:  # never let one URL stop the consumer or the sender
            log.exception("webhook %s: unexpected error", hook["_id"])
            error = f"{type(exc).__name__}"
        attempt = {
            "at": now_ms(),
            "status_code": status_code,
            "error": error,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        return attempt, error

    async def attempt(self, hook: Document, delivery: Document) -> bool:
        """A stored delivery's next attempt, recorded; whether it succeeded."""
        attempt, error = await self._post(hook, delivery)
        now = attempt["at"]
        repo = self.storage.webhooks
        attempts = len(delivery.get("attempts", [])) + 1
        try:
            if error is None:
                await repo.attempted(
                    delivery["_id"], attempt, status="delivered", next_attempt_at=None, now=now
                )
                await repo.succeeded(hook["_id"])
                self.delivered += 1
                return True
            self.failed_attempts += 1
            outcome: Document = {}
            self._after_failure(outcome, attempts, now)
            await repo.attempted(
                delivery["_id"],
                attempt,
                status=outcome["status"],
                next_attempt_at=outcome.get("next_attempt_at"),
                now=now,
            )
            return False
        finally:
            self.progress.set()

    async def _failed(self, hook: Document, now: dt.datetime) -> None:
        self._read_at = None  # the failure count changed: read the hooks again
        if await self.storage.webhooks.failed_attempts(hook["_id"], 1, self.policy.disable_after, now):
            log.warning(
                "webhook %s disabled after %d consecutive failed attempts (setWebhookEnabled turns it on)",
                hook["_id"],
                self.policy.disable_after,
            )
            self.forget()
