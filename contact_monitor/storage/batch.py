"""Group commit: inserts of concurrent requests written together, one `insert_many` a batch.

Each caller awaits its own document: the await returns once the batch holding it is acknowledged
by MongoDB (a 200 still means stored), and raises that document's own error, if any (an unordered
`insert_many` writes every other document of the batch). One batch is in flight at a time; what
arrives meanwhile forms the next one, so batches grow with the load and a lone request waits at
most `max_delay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

import pymongo
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteConcernError, WriteError

from contact_monitor.storage.documents import Document

log = logging.getLogger(__name__)
MAX_BATCH = 256
MAX_DELAY_SECONDS = 0.002
DUPLICATE_KEY = 11000


class InsertBatcher:
    def __init__(
        self,
        collection: AsyncCollection[Document],
        *,
        max_size: int = MAX_BATCH,
        max_delay: float = MAX_DELAY_SECONDS,
    ) -> None:
        self.collection = collection
        self.max_size = max_size
        self.max_delay = max_delay
        self.pending: list[tuple[Document, asyncio.Future[None]]] = []
        self.full = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # Told (collection name, documents, seconds) after each batch: the app's metrics.
        self.on_batch: Callable[[str, int, float], None] | None = None
        # How long one batch may wait for MongoDB (server selection included); None: the
        # driver's own timeouts. Set by the app to CM_TRACK_TIMEOUT_SECONDS.
        self.timeout: float | None = None
        # Awaited with a batch's documents once they are stored, before their callers resume
        # (the core re-homes writes that named a merged contact: core/identity.py `sweep_merged`).
        self.after_write: Callable[[list[Document]], Awaitable[object]] | None = None

    async def insert(self, document: Document) -> None:
        """Once it is stored; `insert_many` gives the document its `_id` when it has none."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((document, future))
        if len(self.pending) >= self.max_size:
            self.full.set()
        if self.task is None or self.task.done():
            # A context of its own: not the deadline (`pymongo.timeout`) of the request that
            # happened to start it, which would expire under the batches that follow.
            self.task = asyncio.create_task(
                self._run(), name=f"insert-batcher-{self.collection.name}", context=contextvars.Context()
            )
        await future

    async def _run(self) -> None:
        try:
            while self.pending:
                if len(self.pending) < self.max_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.full.wait(), self.max_delay)
                await self.flush()
        except BaseException as exc:  # never leave a caller waiting on a dead flusher
            self._fail_pending(exc if isinstance(exc, Exception) else RuntimeError("batcher stopped"))
            raise

    def _fail_pending(self, exc: Exception) -> None:
        pending, self.pending = self.pending, []
        for _, future in pending:
            if not future.done():
                future.set_exception(exc)

    async def flush(self) -> None:
        """Write what is pending now, in batches of `max_size`."""
        while self.pending:
            batch, self.pending = self.pending[: self.max_size], self.pending[self.max_size :]
            self.full.clear()
            if len(self.pending) >= self.max_size:
                self.full.set()
            await self._write(batch)

    async def _write(self, batch: list[tuple[Document, asyncio.Future[None]]]) -> None:
        failed: dict[int, Exception] = {}
        started = time.perf_counter()
        try:
            with pymongo.timeout(self.timeout):
                await self.collection.insert_many([document for document, _ in batch], ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                kind = DuplicateKeyError if error.get("code") == DUPLICATE_KEY else WriteError
                failed[int(error["index"])] = kind(
                    error.get("errmsg", "write error"), error.get("code"), error
                )
            concern = exc.details.get("writeConcernErrors") or []
            if concern:  # written, but not as durably as the URI asks: not a success to report
                message = concern[0].get("errmsg", "write concern error")
                for index in range(len(batch)):
                    failed.setdefault(index, WriteConcernError(message, concern[0].get("code")))
        except Exception as exc:  # the whole batch failed (an outage): every caller hears it,
            for _, future in batch:  # and so does everyone waiting behind it, at once
                if not future.done():
                    future.set_exception(exc)
            self._fail_pending(exc)
            return
        finally:
            if self.on_batch is not None:
                self.on_batch(self.collection.name, len(batch), time.perf_counter() - started)
        if self.after_write is not None:
            stored = [document for index, (document, _) in enumerate(batch) if index not in failed]
            try:
                with pymongo.timeout(self.timeout):
                    await self.after_write(stored)
            except Exception:
                # Stored all the same: a 200 stays true, and an error would make clients send the
                # documents again. What the hook did not do, the core's periodic work does.
                log.warning("after-write step of a %s batch failed", self.collection.name, exc_info=True)
        for index, (_, future) in enumerate(batch):
            if future.done():  # the caller gave up (cancelled)
                continue
            if index in failed:
                future.set_exception(failed[index])
            else:
                future.set_result(None)

    async def close(self) -> None:
        """Write what is pending (at shutdown), the batch in flight included, and stop."""
        if self.task is not None and not self.task.done():
            self.full.set()  # no need to wait for the delay any more
            with contextlib.suppress(Exception):
                await self.task
        await self.flush()
