"""Group commit: inserts of concurrent requests written together, one `insert_many` a batch
per collection.

Each caller awaits its own unit (one document, or several for different collections, such as a
new visitor's contact, device and hit): the await returns once every document of the unit is
acknowledged by MongoDB (a 200 still means stored), and raises the unit's own error, if any (an
unordered `insert_many` writes every other document of the batch). A batcher over several
collections writes them in the order given, one command at a time, and a unit's later documents
only after its earlier ones were stored (a hit never names a contact that could not be written).
One batch is in flight at a time; what arrives meanwhile forms the next one, so batches grow
with the load and a lone request waits at most `max_delay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import pymongo
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError, WriteConcernError, WriteError

from contact_monitor.storage.documents import Document

log = logging.getLogger(__name__)
MAX_BATCH = 256
MAX_DELAY_SECONDS = 0.002
DUPLICATE_KEY = 11000
# A unit: (index of its collection in the batcher, document) pairs, in that order.
Unit = list[tuple[int, Document]]


class BatchStopped(PyMongoError):
    """The group commit was stopped (its task cancelled) before this unit's batch was
    acknowledged: the unit may or may not be stored. A database error like any other for the
    caller (the pixel spools the hit, whose replay is idempotent; `/mtc/event` answers 503)."""


def as_error(exc: BaseException) -> Exception:
    """What the callers of a batcher stopped by `exc` hear (a cancellation is not theirs)."""
    return exc if isinstance(exc, Exception) else BatchStopped("the group commit stopped")


class InsertBatcher:
    def __init__(
        self,
        *collections: AsyncCollection[Document],
        max_size: int = MAX_BATCH,
        max_delay: float = MAX_DELAY_SECONDS,
    ) -> None:
        if not collections:
            raise ValueError("a batcher writes to at least one collection")
        self.collections = collections
        self.collection = collections[0]
        self._positions = {(c.database.name, c.name): index for index, c in enumerate(collections)}
        self.name = "+".join(collection.name for collection in collections)
        self.max_size = max_size  # units per batch
        self.max_delay = max_delay
        self.pending: list[tuple[Unit, asyncio.Future[None]]] = []
        self.full = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # Told (collection name, documents, seconds) after each insert_many: the app's metrics.
        self.on_batch: Callable[[str, int, float], None] | None = None
        # How long one batch may wait for MongoDB (server selection included); None: the
        # driver's own timeouts. Set by the app to CM_TRACK_TIMEOUT_SECONDS.
        self.timeout: float | None = None
        # Awaited with a batch's stored documents (every collection's, once per batch) before
        # their callers resume (the core re-homes writes that named a merged contact:
        # core/identity.py `sweep_merged`).
        self.after_write: Callable[[list[Document]], Awaitable[object]] | None = None

    async def insert(self, document: Document, collection: AsyncCollection[Document] | None = None) -> None:
        """Once it is stored; `insert_many` gives the document its `_id` when it has none."""
        await self.insert_together([(self.collection if collection is None else collection, document)])

    async def insert_together(self, documents: Sequence[tuple[AsyncCollection[Document], Document]]) -> None:
        """Once all are stored, in the batcher's collection order (`ValueError` for a collection
        it does not write). Raises the first error of the unit; documents after it are not written."""
        unit = [(self._index(collection), document) for collection, document in documents]
        if not unit:
            return
        unit.sort(key=lambda part: part[0])
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((unit, future))
        if len(self.pending) >= self.max_size:
            self.full.set()
        if self.task is None or self.task.done():
            # A context of its own: not the deadline (`pymongo.timeout`) of the request that
            # happened to start it, which would expire under the batches that follow.
            self.task = asyncio.create_task(
                self._run(), name=f"insert-batcher-{self.name}", context=contextvars.Context()
            )
        await future

    def _index(self, collection: AsyncCollection[Document]) -> int:
        try:
            return self._positions[(collection.database.name, collection.name)]
        except KeyError:
            raise ValueError(f"this batcher does not write to {collection.name!r}") from None

    async def _run(self) -> None:
        try:
            while self.pending:
                if len(self.pending) < self.max_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.full.wait(), self.max_delay)
                await self.flush()
        except BaseException as exc:  # never leave a caller waiting on a dead flusher
            self._fail_pending(as_error(exc))
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
            try:
                await self._write(batch)
            except BaseException as exc:  # stopped (cancelled) mid-batch, or a bug: its callers,
                # no longer pending, must not wait forever
                error = as_error(exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                raise

    async def _write(self, batch: list[tuple[Unit, asyncio.Future[None]]]) -> None:
        failed: dict[int, Exception] = {}  # unit index -> its error
        stored: list[Document] = []
        outage = False
        for index, collection in enumerate(self.collections):
            rows = [
                (unit_index, document)
                for unit_index, (unit, _) in enumerate(batch)
                if unit_index not in failed
                for position, document in unit
                if position == index
            ]
            if not rows:
                continue
            try:
                refused = await self._insert(collection, rows)
            except Exception as exc:  # the whole insert failed (an outage): its units hear it,
                for unit_index, (unit, _) in enumerate(batch):  # not those stored whole before it
                    if unit_index not in failed and unit[-1][0] >= index:
                        failed[unit_index] = exc
                self._fail_pending(exc)  # and everyone waiting behind them, at once
                outage = True
                break
            for unit_index, error in refused.items():
                failed.setdefault(unit_index, error)
            stored += [document for unit_index, document in rows if unit_index not in refused]
        # Not during an outage (it would wait out its own timeout): the core's periodic work
        # does what the hook did not.
        if self.after_write is not None and stored and not outage:
            try:
                with pymongo.timeout(self.timeout):
                    await self.after_write(stored)
            except Exception:
                # Stored all the same: a 200 stays true, and an error would make clients send the
                # documents again. What the hook did not do, the core's periodic work does.
                log.warning("after-write step of a %s batch failed", self.name, exc_info=True)
        for unit_index, (_, future) in enumerate(batch):
            if future.done():  # the caller gave up (cancelled)
                continue
            if unit_index in failed:
                future.set_exception(failed[unit_index])
            else:
                future.set_result(None)

    async def _insert(
        self, collection: AsyncCollection[Document], rows: list[tuple[int, Document]]
    ) -> dict[int, Exception]:
        """One insert_many of these (unit index, document) rows; the units whose document was
        refused, with the error (a write concern error refuses them all: written, but not as
        durably as the URI asks, which is not a success to report)."""
        refused: dict[int, Exception] = {}
        started = time.perf_counter()
        try:
            with pymongo.timeout(self.timeout):
                await collection.insert_many([document for _, document in rows], ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                kind = DuplicateKeyError if error.get("code") == DUPLICATE_KEY else WriteError
                unit_index = rows[int(error["index"])][0]
                message = error.get("errmsg", "write error")
                refused.setdefault(unit_index, kind(message, error.get("code"), error))
            concern = exc.details.get("writeConcernErrors") or []
            if concern:
                message = concern[0].get("errmsg", "write concern error")
                for unit_index, _ in rows:
                    refused.setdefault(unit_index, WriteConcernError(message, concern[0].get("code")))
        finally:
            if self.on_batch is not None:
                self.on_batch(collection.name, len(rows), time.perf_counter() - started)
        return refused

    async def close(self) -> None:
        """Write what is pending (at shutdown), the batch in flight included, and stop."""
        if self.task is not None and not self.task.done():
            self.full.set()  # no need to wait for the delay any more
            with contextlib.suppress(Exception):
                await self.task
        await self.flush()
