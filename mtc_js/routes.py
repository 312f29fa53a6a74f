"""GET /mtc.js: the tracker, with this server's own host and scheme written into it.

The script posts back to the host it was loaded from. Behind a proxy, set CM_PUBLIC_URL (or list
the proxy in CM_TRUSTED_PROXIES so that X-Forwarded-Proto / X-Forwarded-Host are believed).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from contact_monitor import __version__
from contact_monitor.core.network import is_trusted_peer

if TYPE_CHECKING:
    from contact_monitor.settings import Settings

# A day: the script changes only when the server is upgraded, and the ETag makes revalidation cheap.
CACHE_CONTROL = "public, max-age=86400"
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


@lru_cache(maxsize=1)
def template() -> str:
    return resources.files("mtc_js").joinpath("mtc.js").read_text(encoding="utf-8")


@lru_cache(maxsize=64)
def render(host: str, scheme: str) -> tuple[bytes, str]:
    """The script for one public address, and its ETag."""
    body = (
        template()
        .replace("__CM_SERVER_HOST__", host)
        .replace("__CM_SERVER_SCHEME__", scheme)
        .replace("__CM_VERSION__", __version__)
        .encode()
    )
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _nearest(value: str) -> str:
    """The value the nearest proxy wrote: the last of a comma-separated list (earlier ones may
    come from the client, through the proxy)."""
    return value.split(",")[-1].strip()


def public_address(request: Request, settings: Settings) -> tuple[str, str, str | None] | None:
    """(host, scheme, the Vary header) the browser reached us at; None when the Host header is
    not a host name. The script is cached publicly, so the answer names every request header it
    depends on: none with CM_PUBLIC_URL (the recommended setup behind proxies)."""
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        return parts.netloc, f"{parts.scheme}:", None
    host = request.headers.get("host", "")
    scheme = request.url.scheme
    vary = "Host"
    peer = request.client.host if request.client else None
    if is_trusted_peer(peer, settings.trusted_proxies):
        host = _nearest(request.headers.get("x-forwarded-host", host))
        scheme = _nearest(request.headers.get("x-forwarded-proto", scheme))
        vary = "Host, X-Forwarded-Host, X-Forwarded-Proto"
    if not _HOST.match(host) or scheme not in ("http", "https"):
        return None
    return host, f"{scheme}:", vary


async def tracker_script(request: Request) -> Response:
    address = public_address(request, request.state.services.settings)
    if address is None:
        return PlainTextResponse("invalid Host header", status_code=400)
    host, scheme, vary = address
    body, etag = render(host, scheme)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if vary:
        headers["Vary"] = vary
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/javascript", headers=headers)


routes = [Route("/mtc.js", tracker_script, methods=["GET", "HEAD"])]
