"""Should this request be recorded at all? (pure)

Not recorded: HEAD and prefetch/prerender requests, bots (when filtering is on), do-not-track
IPs, and, when CM_RESPECT_DNT is on, browsers sending `DNT: 1` or `Sec-GPC: 1`.
The reasons reported for each: docs/tracking-protocol.md, "Skipped requests".
"""

from __future__ import annotations

from collections.abc import Mapping

from contact_monitor.core.network import IPAddress, is_blocked
from contact_monitor.settings import Settings
from ingest.useragent import UserAgent


def privacy_signals(headers: Mapping[str, str]) -> dict[str, bool]:
    """The browser's privacy headers, stored on every hit whether or not they are honoured."""
    return {"dnt": headers.get("dnt", "").strip() == "1", "gpc": headers.get("sec-gpc", "").strip() == "1"}


def skip_reason(
    settings: Settings,
    *,
    method: str,
    headers: Mapping[str, str],
    user_agent: UserAgent,
    ip: IPAddress | None,
) -> str | None:
    """Why the request is not recorded, or None when it is."""
    if method == "HEAD":
        return "HEAD request"
    purpose = f"{headers.get('sec-purpose', '')} {headers.get('purpose', '')}".lower()
    if "prefetch" in purpose or "prerender" in purpose:
        return "prefetch or prerender request"
    if settings.filter_bots and user_agent.is_bot:
        return "bot user agent"
    if is_blocked(ip, settings.do_not_track_networks, settings.do_not_track_patterns):
        return "IP address on the do-not-track list"
    if settings.respect_dnt and any(privacy_signals(headers).values()):
        return "browser asked not to be tracked (DNT / Sec-GPC)"
    return None
