"""Group commit (storage/batch.py) against the real database: batches by size, by time, at
shutdown, and one bad document failing alone."""

import asyncio

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import DuplicateKeyError, ServerSelectionTimeoutError

from contact_monitor.storage.batch import BatchStopped, InsertBatcher
from tests.servers import collect_refused_sockets


class Inserts(monitoring.CommandListener):
    def __init__(self):
        self.sizes = []

    def started(self, event):
        if event.command_name == "insert":
            self.sizes.append(len(event.command.get("documents", [])))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


@pytest.fixture
async def collection(settings):
    inserts = Inserts()
    client = AsyncMongoClient(settings.mongodb_uri, event_listeners=[inserts])
    try:
        yield client[settings.mongodb_db]["batched"], inserts
    finally:
        await client.drop_database(settings.mongodb_db)
        await client.close()


async def test_a_full_batch_is_written_at_once(collection):
    target, inserts = collection
    batcher = InsertBatcher(target, max_size=3, max_delay=3600)  # only the size can flush it
    await asyncio.gather(*(batcher.insert({"n": i}) for i in range(3)))
    assert inserts.sizes == [3]
    assert await target.count_documents({}) == 3


async def test_a_partial_batch_is_written_after_the_delay(collection):
    target, inserts = collection
    batcher = InsertBatcher(target, max_size=100, max_delay=0.01)
    await asyncio.gather(*(batcher.insert({"n": i}) for i in range(5)))
    assert inserts.sizes == [5]


async def test_what_is_pending_is_written_at_shutdown(collection):
    target, inserts = collection
    batcher = InsertBatcher(target, max_size=100, max_delay=3600)
    waiting = asyncio.create_task(batcher.insert({"n": 1}))
    await asyncio.sleep(0)  # the request is queued
    await batcher.close()
    await waiting  # answered: it was stored
    assert inserts.sizes == [1] and await target.count_documents({"n": 1}) == 1


async def test_one_bad_document_fails_alone(collection):
    target, _ = collection
    await target.insert_one({"_id": "taken"})
    batcher = InsertBatcher(target, max_size=3, max_delay=3600)
    results = await asyncio.gather(
        batcher.insert({"_id": "a"}),
        batcher.insert({"_id": "taken"}),
        batcher.insert({"_id": "b"}),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], DuplicateKeyError)
    assert sorted([d["_id"] async for d in target.find()]) == ["a", "b", "taken"]


async def test_larger_loads_make_larger_batches(collection):
    target, inserts = collection
    batcher = InsertBatcher(target, max_size=50, max_delay=0.005)
    await asyncio.gather(*(batcher.insert({"n": i}) for i in range(120)))
    assert sum(inserts.sizes) == 120 and max(inserts.sizes) == 50 and len(inserts.sizes) == 3
    docs = [d["n"] async for d in target.find()]
    assert sorted(docs) == list(range(120))


async def test_when_the_database_is_down_everyone_waiting_hears_it_at_once(tmp_path):
    """A whole batch failing (no server) fails the batches queued behind it too, instead of
    each waiting out its own server-selection timeout; and no caller is left waiting."""
    from contact_monitor.embedded import free_port

    client = AsyncMongoClient(f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200")
    try:
        batcher = InsertBatcher(client["db"]["down"], max_size=1, max_delay=3600)
        written = []
        batcher.on_batch = lambda collection, size, seconds: written.append(size)
        results = await asyncio.gather(*(batcher.insert({"n": i}) for i in range(3)), return_exceptions=True)
        assert all(isinstance(result, ServerSelectionTimeoutError) for result in results)
        assert written == [1]  # one attempt; the two queued behind it failed with it
        assert batcher.pending == []
        del results  # their tracebacks hold the refused connection
    finally:
        await client.close()
        collect_refused_sockets()


async def test_callers_of_a_batch_in_flight_hear_it_when_the_batcher_is_stopped(collection):
    """Cancelled mid-batch (here in the step after the insert): the batch's callers get an error
    at once instead of waiting forever; the units queued behind it too."""
    target, _ = collection
    batcher = InsertBatcher(target, max_size=1, max_delay=3600)
    in_step, never = asyncio.Event(), asyncio.Event()

    async def stuck(documents):
        in_step.set()
        await never.wait()

    batcher.after_write = stuck
    first = asyncio.create_task(batcher.insert({"n": 1}))
    await asyncio.wait_for(in_step.wait(), 10)
    second = asyncio.create_task(batcher.insert({"n": 2}))  # queued behind the batch in flight
    await asyncio.sleep(0)
    assert batcher.task is not None
    batcher.task.cancel()
    results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
    assert all(isinstance(result, BatchStopped) for result in results), results
    assert batcher.pending == []


async def test_a_failing_after_write_step_does_not_fail_stored_documents(collection):
    """The step after a batch (the core's merge sweep) fails: the documents are stored, so the
    callers hear success (an error would make clients send them again); the step sees them."""
    coll, _ = collection
    batcher = InsertBatcher(coll, max_size=4, max_delay=0.01)
    seen = []

    async def after_write(documents):
        seen.extend(document["n"] for document in documents)
        raise ServerSelectionTimeoutError("the merge records cannot be read")

    batcher.after_write = after_write
    await asyncio.gather(*(batcher.insert({"n": n}) for n in range(3)))
    assert sorted(seen) == [0, 1, 2]
    assert await coll.count_documents({}) == 3


async def test_units_are_written_in_collection_order_and_stop_at_their_first_refusal(collection):
    """A batcher over several collections: one insert_many per collection and batch, in the
    order given; a unit whose first document is refused has its later ones not written (and
    hears the refusal), its neighbours are whole."""
    first, inserts = collection
    second = first.database["batched_second"]
    await first.insert_one({"_id": "taken"})
    inserts.sizes.clear()
    batcher = InsertBatcher(first, second, max_size=10, max_delay=3600)
    seen: list[list[str]] = []

    async def after_write(documents):
        seen.append(sorted(str(document["_id"]) for document in documents))

    batcher.after_write = after_write
    results = await asyncio.gather(
        batcher.insert_together([(second, {"_id": "a2"}), (first, {"_id": "a1"})]),
        batcher.insert_together([(first, {"_id": "taken"}), (second, {"_id": "b2"})]),
        batcher.insert({"_id": "c2"}, second),
        batcher.close(),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None and isinstance(results[1], DuplicateKeyError)
    assert inserts.sizes == [2, 2]  # a1 + taken, then a2 + c2: b2 was never sent
    assert await second.count_documents({}) == 2 and await second.count_documents({"_id": "b2"}) == 0
    assert seen == [["a1", "a2", "c2"]]  # one after-write step for the whole batch
    with pytest.raises(ValueError, match="does not write"):
        await batcher.insert({"_id": "x"}, first.database["elsewhere"])


async def test_an_outage_in_a_later_collection_fails_only_the_units_that_reach_it(collection, tmp_path):
    """The second collection's whole insert fails (its server is gone): units stored whole in
    the first collection succeed (a caller must not retry what is stored), the others hear
    the error."""
    from contact_monitor.embedded import free_port

    first, _ = collection
    down = AsyncMongoClient(f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200")
    try:
        second = down[first.database.name]["batched_second"]
        batcher = InsertBatcher(first, second, max_size=10, max_delay=3600)
        results = await asyncio.gather(
            batcher.insert({"_id": "alone"}),
            batcher.insert_together([(first, {"_id": "with-second"}), (second, {"_id": "lost"})]),
            batcher.close(),
            return_exceptions=True,
        )
        assert results[0] is None and isinstance(results[1], ServerSelectionTimeoutError)
        assert sorted([d["_id"] async for d in first.find()]) == ["alone", "with-second"]
        del results  # their tracebacks hold the refused connection
    finally:
        await down.close()
        collect_refused_sockets()
