"""The tracking cookies set on our own domain (third-party cookies when embedded elsewhere).

SameSite=None needs Secure; with CM_COOKIE_SECURE=false (plain-http development) browsers drop
SameSite=None cookies, so they are sent as SameSite=Lax instead, which still flows between
ports of one host name (same site).
Names, values and lifetimes: docs/tracking-protocol.md, "Cookies".
"""

from __future__ import annotations

from starlette.responses import Response

from contact_monitor.settings import Settings

CONTACT_COOKIE = "mtc_id"
DEVICE_COOKIE = "mautic_device_id"
REFERER_COOKIE = "mautic_referer_id"
DEVICE_COOKIE_SECONDS = 365 * 24 * 3600
REFERER_COOKIE_SECONDS = 30 * 60


def set_tracking_cookies(
    response: Response, settings: Settings, *, contact_id: str, device_id: str, hit_id: str | None
) -> None:
    """Set (and refresh the expiry of) the visitor's cookies on every tracked response."""
    secure = settings.cookie_secure
    same_site = "none" if secure else "lax"

    def put(name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            domain=settings.cookie_domain,
            secure=secure,
            httponly=False,
            samesite=same_site,  # type: ignore[arg-type]
        )

    put(CONTACT_COOKIE, contact_id, None)
    put(DEVICE_COOKIE, device_id, DEVICE_COOKIE_SECONDS)
    if hit_id is not None:
        put(REFERER_COOKIE, hit_id, REFERER_COOKIE_SECONDS)
