"""How `contact-monitor serve` speaks HTTP and websockets: uvicorn's protocols, with two changes.

httptools parses a request target with 16-bit offsets: a URL of 64 KiB or more fails, and uvicorn
answers a plain-text 400 before the app sees the request. A tracking pixel must still answer its
GIF, so an over-long pixel target is cut at its last complete parameter below the limit; the app
then records the parameters that fit (other paths keep the 400) (docs/tracking-protocol.md, "Limits").

Websockets: a live event goes to hundreds of sockets at once, and through ASGI each frame costs
~25 us of server CPU (bench/README.md); written as ready-made bytes straight to the transport it
costs ~15 us, most of it the kernel's. `FrameWritingProtocol` offers that to the app as an ASGI
scope extension (`api.live.RAW_FRAMES`), used only for the frames of shared live subscriptions
(api/live.py); everything else, and every server without the extension, goes through ASGI.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from api.live import RAW_FRAMES

# The longest request target httptools.parse_url accepts.
MAX_TARGET_BYTES = 65_535
PIXEL = b"/mtracking.gif"


def cut_target(target: bytes, limit: int = MAX_TARGET_BYTES) -> bytes:
    """The target, or its path and the complete `name=value` pairs that fit in `limit` bytes."""
    if len(target) <= limit:
        return target
    cut = target.rfind(b"&", 0, limit)
    if cut < 0:
        cut = target.find(b"?")
        if cut < 0 or cut > limit:
            return target[:limit]
    return target[:cut]


class LongTargetHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        if self.url.startswith(PIXEL):  # elsewhere a target too long is refused, as before
            self.url = cut_target(self.url)
        super().on_headers_complete()


class RawFrames:
    """Complete websocket frames written to one socket's transport, if it can take them now."""

    __slots__ = ("high_water", "protocol")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self.protocol = protocol
        try:
            self.high_water = protocol.transport.get_write_buffer_limits()[1]
        except (AttributeError, NotImplementedError):
            self.high_water = 64 * 1024

    def write(self, frames: bytes) -> bool | None:
        """True: written; None: the socket's buffer would pass its high-water mark (send later,
        through ASGI, which waits for room); False: the socket is closing or gone. So a socket
        that does not read holds at most the high-water mark here."""
        protocol = self.protocol
        transport = protocol.transport
        if protocol.disconnected or protocol.close_sent or transport.is_closing():
            return False
        if (
            not protocol.writable.is_set()
            or transport.get_write_buffer_size() + len(frames) > self.high_water
        ):
            return None
        transport.write(frames)
        return True

    def abort(self) -> None:
        """Drops the connection at once (a client that has stopped reading can take no close)."""
        self.protocol.transport.abort()


class FrameWritingProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake was accepted: the app's task has not run yet
            scope["extensions"][RAW_FRAMES] = RawFrames(self)
