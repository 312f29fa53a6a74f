"""The websockets of /graphql: how many may be open, and keys that are revoked while in use.

Close codes (also in the README):
- 1013 Try Again Later: this process holds CM_WS_MAX_SOCKETS sockets, or CM_WS_MAX_UNAUTHENTICATED
  that have not sent `connection_init` yet;
- 4429: the key already holds CM_WS_MAX_PER_KEY sockets on this process;
- 4403: a missing, invalid or revoked key (at `connection_init`, at every `subscribe`, and within
  CM_KEY_RECHECK_SECONDS of a revocation while the socket is open);
- 4410: a subscription whose socket stopped reading: its queue of CM_SUBSCRIPTION_QUEUE events
  stayed full (LAGGED) for CM_WS_STUCK_SECONDS while events kept coming; the close frame follows
  what was queued (the LAGGED marker last: the client resumes from its cursor). If the close
  cannot be written within the same time either, the connection is dropped
  (subscriptions/shared.py);
- 4406: no subprotocol we speak (only `graphql-transport-ws`): the socket is accepted with the
  client's first subprotocol and then closed, so that browsers report 4406 and not 1006.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from contact_monitor.storage import Storage

log = logging.getLogger(__name__)
SOCKET_KEY = "cm.socket"
STUCK_CODE = 4410
STUCK_REASON = "the client stopped reading: events were dropped for too long; resume from the LAGGED cursor"


class SocketRefused(Exception):
    """Close the socket with this code (raised from `on_ws_connect`)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(eq=False)
class Socket:
    """One websocket's place in the registry (kept in its ASGI scope)."""

    key_name: str | None = None
    websocket: WebSocket | None = None


@dataclass
class SocketRegistry:
    max_sockets: int
    max_per_key: int
    max_unauthenticated: int
    recheck_seconds: float
    unauthenticated: set[Socket] = field(default_factory=set)
    by_key: dict[str, set[Socket]] = field(default_factory=dict)
    _watch: asyncio.Task[None] | None = None

    @property
    def open(self) -> int:
        return len(self.unauthenticated) + sum(len(sockets) for sockets in self.by_key.values())

    def admit(self) -> Socket | None:
        """A place for a new socket, or None when this process is full."""
        if self.open >= self.max_sockets or len(self.unauthenticated) >= self.max_unauthenticated:
            return None
        socket = Socket()
        self.unauthenticated.add(socket)
        return socket

    def authenticated(self, socket: Socket, key_name: str, websocket: WebSocket, storage: Storage) -> None:
        """The socket's key is valid: count it against the key (`SocketRefused` past the cap) and
        watch the key for revocation."""
        held = self.by_key.get(key_name, set())
        if len(held) >= self.max_per_key:
            raise SocketRefused(4429, f"this API key already holds {self.max_per_key} websockets")
        self.unauthenticated.discard(socket)
        socket.key_name, socket.websocket = key_name, websocket
        self.by_key.setdefault(key_name, set()).add(socket)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_keys(storage), name="websocket-key-watch")

    def gone(self, socket: Socket) -> None:
        self.unauthenticated.discard(socket)
        if socket.key_name is not None:
            held = self.by_key.get(socket.key_name, set())
            held.discard(socket)
            if not held:
                self.by_key.pop(socket.key_name, None)

    async def _watch_keys(self, storage: Storage) -> None:
        """One query every `recheck_seconds` for all open sockets of this process; ends when none
        is left (the next authenticated socket starts it again)."""
        while self.by_key:
            await asyncio.sleep(self.recheck_seconds)
            try:
                revoked = await storage.api_keys.revoked_among(list(self.by_key))
            except Exception:  # an outage: keep the sockets, check again later
                log.warning("could not check the keys of open websockets", exc_info=True)
                continue
            for name in revoked:
                for socket in list(self.by_key.get(name, ())):
                    try:
                        await close(socket.websocket, 4403, "API key revoked")
                    except Exception:  # one socket's failure must not spare the others
                        log.warning("could not close a websocket of a revoked key", exc_info=True)
                    self.gone(socket)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch


async def close(websocket: WebSocket | None, code: int, reason: str) -> None:
    if websocket is None or websocket.application_state == WebSocketState.DISCONNECTED:
        return
    # Closed meanwhile by the client or the handler: nothing left to close.
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await websocket.close(code=code, reason=reason)


async def refuse(scope: Scope, receive: Receive, send: Send, code: int, reason: str) -> None:
    """Accept (echoing the client's first subprotocol, which browsers require) and close with
    `code`, so that the client sees the code rather than a failed handshake."""
    websocket = WebSocket(scope, receive, send)
    offered: list[Any] = scope.get("subprotocols") or []
    await websocket.accept(subprotocol=offered[0] if offered else None)
    await websocket.close(code=code, reason=reason)
