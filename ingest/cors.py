"""CORS: allowed origins (exact or shell wildcards) get their origin echoed with credentials; any
other origin gets no CORS headers at all. The tracked sites (CM_CORS_ORIGINS) may call the
tracking endpoints; the dashboards (CM_DASHBOARD_ORIGINS) may call /graphql.

`OPTIONS` on any path is answered here with 204, as Mautic's CORS middleware does.
"""

from __future__ import annotations

import fnmatch
import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contact_monitor.core.traffic import CORS, site_of

log = logging.getLogger(__name__)

ALLOW_HEADERS = "Origin, X-Requested-With, Content-Type, Authorization"
ALLOW_METHODS = "PUT, GET, POST, DELETE, OPTIONS"
MAX_AGE = "36000"


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """`*` allows every origin; entries match exactly or as case-insensitive shell wildcards."""
    if not origin or origin == "null":
        return False
    lowered = origin.lower()
    for entry in allowed:
        if entry == "*" or entry == origin:
            return True
        if any(ch in entry for ch in "*?[") and fnmatch.fnmatchcase(lowered, entry.lower()):
            return True
    return False


def note_refused(scope: Scope, origin: str) -> None:
    """A browser asked whether a page of `origin` may post to us, and was told no (mtc.js then
    falls back to the image): the dashboard's Check your site shows it (core/traffic.py)."""
    services = (scope.get("state") or {}).get("services")
    if services is None:
        return
    try:
        services.traffic.note(site_of(origin, None, None), CORS, None)
    except Exception:  # counting never fails a request
        log.exception("the traffic counts skipped a preflight")


class CORSMiddleware:
    def __init__(
        self, app: ASGIApp, allowed_origins: tuple[str, ...], api_origins: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.allowed = allowed_origins
        self.api_allowed = api_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin", "")
        is_api = scope.get("path", "").startswith("/graphql")
        allowed = origin_allowed(origin, self.api_allowed if is_api else self.allowed)
        if scope["method"] == "OPTIONS":
            response_headers = [(b"content-length", b"0")]
            if not allowed and not is_api and origin:
                note_refused(scope, origin)
            if allowed:
                response_headers += [
                    (name.encode(), value.encode())
                    for name, value in self.cors_headers(origin, preflight=True)
                ]
            await send({"type": "http.response.start", "status": 204, "headers": response_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                mutable = MutableHeaders(scope=message)
                for name, value in self.cors_headers(origin, preflight=False):
                    if name == "Vary":
                        mutable.add_vary_header("Origin")
                    else:
                        mutable[name] = value
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    def cors_headers(origin: str, *, preflight: bool) -> list[tuple[str, str]]:
        headers = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]
        if preflight:
            headers += [
                ("Access-Control-Allow-Headers", ALLOW_HEADERS),
                ("Access-Control-Allow-Methods", ALLOW_METHODS),
                ("Access-Control-Max-Age", MAX_AGE),
            ]
        return headers
