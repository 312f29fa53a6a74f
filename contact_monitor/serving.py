"""How `contact-monitor serve` speaks HTTP: uvicorn's httptools protocol, with one change.

httptools parses a request target with 16-bit offsets: a URL of 64 KiB or more fails, and uvicorn
answers a plain-text 400 before the app sees the request. A tracking pixel must still answer its
GIF, so an over-long pixel target is cut at its last complete parameter below the limit; the app
then records the parameters that fit (other paths keep the 400) (docs/tracking-protocol.md, "Limits").
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
