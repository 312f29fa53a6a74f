"""Background loops that stop between units of work: cancelling a task in the middle of a
MongoDB operation leaves PyMongo's connection to the garbage collector (a leaked socket), so
`stop` cancels a loop only while it waits (on Redis, a timer or an event), and otherwise lets it
finish what it is doing first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Worker:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._busy = 0

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        """Around work that should not be cut off by `stop`."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    async def stop(self, task: asyncio.Task[None], grace: float = 10.0) -> None:
        """Ask the loop to stop; cancel it at once when it is waiting, else after its current
        work (at most `grace` seconds)."""
        self.stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not task.done() and self._busy and loop.time() < deadline:
            await asyncio.wait({task}, timeout=0.05)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task}, timeout=grace)
