"""The tracking cookies set on our own domain (third-party cookies when embedded elsewhere).

SameSite=None needs Secure; with CM_COOKIE_SECURE=false (plain-http development) browsers drop
SameSite=None cookies, so they are sent as SameSite=Lax instead, which still flows between
ports of one host name (same site).
Names, values and lifetimes: docs/tracking-protocol.md, "Cookies".
"""

from __future__ import annotations

import re
from functools import lru_cache

from starlette.responses import Response

from contact_monitor.settings import Settings

CONTACT_COOKIE = "mtc_id"
DEVICE_COOKIE = "mautic_device_id"
REFERER_COOKIE = "mautic_referer_id"
DEVICE_COOKIE_SECONDS = 365 * 24 * 3600
REFERER_COOKIE_SECONDS = 30 * 60


# Our ids need no quoting in a cookie; anything else takes Starlette's own path.
PLAIN_VALUE = re.compile(r"[A-Za-z0-9_-]{1,64}")
PLACEHOLDER = "cmvalueplaceholder"


@lru_cache(maxsize=64)
def _header_around(name: str, max_age: int | None, domain: str | None, secure: bool) -> tuple[bytes, bytes]:
    """The Set-Cookie header Starlette writes for this cookie, split around its value: built
    once, so that a tracked response formats three cookies without http.cookies."""
    probe = Response()
    _set_with_starlette(probe, name, PLACEHOLDER, max_age, domain, secure)
    header = probe.raw_headers[-1][1]
    before, _, after = header.partition(PLACEHOLDER.encode())
    return before, after


def _set_with_starlette(
    response: Response, name: str, value: str, max_age: int | None, domain: str | None, secure: bool
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        domain=domain,
        secure=secure,
        httponly=False,
        samesite="none" if secure else "lax",
    )


def set_tracking_cookies(
    response: Response, settings: Settings, *, contact_id: str, device_id: str, hit_id: str | None
) -> None:
    """Set (and refresh the expiry of) the visitor's cookies on every tracked response."""
    secure, domain = settings.cookie_secure, settings.cookie_domain

    def put(name: str, value: str, max_age: int | None) -> None:
        if PLAIN_VALUE.fullmatch(value):
            before, after = _header_around(name, max_age, domain, secure)
            response.raw_headers.append((b"set-cookie", before + value.encode() + after))
        else:
            _set_with_starlette(response, name, value, max_age, domain, secure)

    put(CONTACT_COOKIE, contact_id, None)
    put(DEVICE_COOKIE, device_id, DEVICE_COOKIE_SECONDS)
    if hit_id is not None:
        put(REFERER_COOKIE, hit_id, REFERER_COOKIE_SECONDS)
