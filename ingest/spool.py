"""The pixel's spool: hits that arrive while MongoDB is unavailable, kept on disk and recorded
when it answers again (docs/tracking-protocol.md, "Responses").

The pixel must answer its GIF whatever happens, so a hit that cannot be stored is appended to
`<data dir>/spool/<pid>.jsonl` (one JSON line: the request as received, its hit id and time
fixed at receipt) and fsync'd before the GIF is sent. While MongoDB is failing, the spool is
used at once for `OPEN_SECONDS` (the driver would otherwise wait its server selection timeout on
every hit). A replayer records the spooled requests in order through the same code as a live
request, skipping a hit id that is already stored, so a replay that is interrupted and run again
writes each hit once.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError
from starlette.requests import Request

log = logging.getLogger(__name__)
OPEN_SECONDS = 5.0
REPLAY_EVERY_SECONDS = 2.0

Replay = Callable[[Request, ObjectId, dt.datetime], Awaitable[None]]


class HitSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{os.getpid()}.jsonl"
        self.open_until = 0.0  # MongoDB failed recently: spool at once until then
        self.lock = asyncio.Lock()  # one append at a time
        self.replaying = asyncio.Lock()  # one replay at a time in this process
        self.replayed = asyncio.Event()  # set whenever the spool was emptied (tests wait on it)

    @property
    def open(self) -> bool:
        return time.monotonic() < self.open_until

    def failed(self) -> None:
        self.open_until = time.monotonic() + OPEN_SECONDS

    async def append(
        self, request: Request, body: bytes, received: tuple[ObjectId, dt.datetime] | None = None
    ) -> None:
        """Keep the request on disk (fsync'd) with its hit id and time: those fixed at receipt,
        or new ones now."""
        hit_id, received_at = received or (ObjectId(), dt.datetime.now(dt.UTC))
        record = {
            "hit_id": str(hit_id),
            "received_at": received_at.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
            "method": request.method,
            "path": request.url.path,
            "query": request.scope.get("query_string", b"").decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "client": list(request.client) if request.client else None,
            "scheme": request.url.scheme,
            "body": base64.b64encode(body).decode(),
        }
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        async with self.lock:
            await asyncio.to_thread(self._write, line)
        self.replayed.clear()

    def _write(self, line: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as spool:
            spool.write(line)
            spool.flush()
            os.fsync(spool.fileno())

    def depth(self) -> int:
        """Spooled hits not replayed yet (lines of the spool files)."""
        total = 0
        for path in self.pending():
            try:
                with path.open("rb") as spool:
                    total += sum(1 for _ in spool)
            except FileNotFoundError:  # replayed meanwhile
                continue
        return total

    def pending(self) -> list[Path]:
        """Spool files to replay: this process's and any a stopped process left."""
        if not self.directory.exists():
            return []
        return sorted(self.directory.glob("*.jsonl")) + sorted(self.directory.glob("*.replaying"))

    async def replay_forever(self, state: dict[str, Any], replay: Replay) -> None:
        """Runs for the life of the app: records what is spooled once MongoDB answers."""
        while True:
            await asyncio.sleep(REPLAY_EVERY_SECONDS)
            if self.open or not self.pending():  # MongoDB failed a moment ago, or nothing to do
                continue
            try:
                await self.replay(state, replay)
            except PyMongoError:
                self.failed()
            except Exception:  # keep trying: the spooled hits are still on disk
                log.exception("replaying the spool failed")

    async def replay(self, state: dict[str, Any], replay: Replay) -> int:
        """Record every spooled request, oldest file and line first; returns how many. A file is
        taken over by renaming it to this process's name first, so that two processes never
        replay the same file (a rename succeeds once)."""
        done = 0
        async with self.replaying:
            for path in self.pending():
                async with self.lock:  # never while a line is being appended to it
                    taken = self._take(path)
                if taken is None:
                    continue
                for line in taken.read_bytes().splitlines():
                    try:
                        record = json.loads(line)
                        request, hit_id = request_of(record, state), ObjectId(record["hit_id"])
                        at = _time(record)
                    except (ValueError, KeyError, TypeError):  # a line cut by a crash while written
                        log.warning("a spooled line could not be read and was skipped: %.200r", line)
                        continue
                    await replay(request, hit_id, at)
                    done += 1
                taken.unlink()
            if not self.pending():
                self.replayed.set()
        return done

    def _take(self, path: Path) -> Path | None:
        """The file renamed to `<name>.<this pid>.replaying`, or None when another live process
        is replaying it or took it first."""
        if path.name.endswith(".replaying"):
            owner = int(path.name.rsplit(".", 2)[-2])
            if owner != os.getpid() and _alive(owner):
                return None
            if owner == os.getpid():
                return path  # left by an earlier, interrupted replay of this process
        taken = path.with_name(f"{path.name.split('.')[0]}.{time.time_ns()}.{os.getpid()}.replaying")
        try:
            path.rename(taken)
        except FileNotFoundError:
            return None
        return taken


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _time(record: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(record["received_at"])


def request_of(record: dict[str, Any], state: dict[str, Any]) -> Request:
    """The spooled request as Starlette would have given it, with the app's state."""
    body = base64.b64decode(record["body"])
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": record["method"],
        "scheme": record.get("scheme", "http"),
        "path": record["path"],
        "raw_path": record["path"].encode(),
        "query_string": record["query"].encode("latin-1"),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in record["headers"]],
        "client": tuple(record["client"]) if record.get("client") else None,
        "server": None,
        "root_path": "",
        "state": dict(state),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)
