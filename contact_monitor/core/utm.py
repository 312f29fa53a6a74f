"""UTM codes: which values a hit carries, and how the timeline shows them (pure)."""

from __future__ import annotations

from collections.abc import Mapping

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
MAX_UTM_LENGTH = 191

_MEDIUM_ICONS = {
    "email": "fa-envelope-o",
    "newsletter": "fa-envelope-o",
    "banner": "fa-bullseye",
    "ad": "fa-bullseye",
    "cpc": "fa-money",
    "location": "fa-map-marker",
}
DEFAULT_ICON = "fa-hashtag"


def extract_utm(params: Mapping[str, object]) -> dict[str, str]:
    """The non-empty `utm_*` values (the five standard keys); empty when there are none."""
    found: dict[str, str] = {}
    for key in UTM_KEYS:
        value = params.get(key)
        if isinstance(value, list):
            value = value[-1] if value else ""
        if isinstance(value, str) and value.strip():
            found[key] = value.strip()[:MAX_UTM_LENGTH]
    return found


def utm_title(utm: Mapping[str, str]) -> str:
    """The timeline title: the campaign, as the user document says."""
    campaign = utm.get("utm_campaign", "")
    return f"UTM Campaign: {campaign}" if campaign else "UTM tags recorded"


def utm_icon(utm: Mapping[str, str]) -> str:
    """The Font Awesome class of the user document's utm_medium table."""
    medium = utm.get("utm_medium", "").strip().lower()
    source = utm.get("utm_source", "").strip().lower()
    source_class = "".join(ch for ch in source if ch.isalnum() or ch in "-_")
    if medium in ("social", "socialmedia"):
        return f"fa-{source_class}" if source_class else "fa-share-alt"
    if medium == "device":
        return f"fa-{source_class}" if source_class else "fa-tablet"
    return _MEDIUM_ICONS.get(medium, DEFAULT_ICON)
