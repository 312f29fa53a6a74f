"""Which events a subscription wants (pure). GAP and LAGGED markers bypass every filter."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EventFilter:
    types: frozenset[str] | None = None
    contact_id: str | None = None
    url_contains: str | None = None
    identified_only: bool = False
    tag: str | None = None
    utm_source: str | None = None
    utm_campaign: str | None = None
    trigger: str | None = None

    @classmethod
    def of(cls, types: Collection[str] | None = None, **conditions: Any) -> EventFilter:
        return cls(types=frozenset(types) if types is not None else None, **conditions)

    def matches(self, event: dict[str, Any]) -> bool:
        if self.types is not None and event.get("type") not in self.types:
            # UTM_RECORDED: a page hit carrying UTM codes (the stream has no event of its own).
            utm_hit = event.get("type") == "page_hit" and bool((event.get("hit") or {}).get("utm"))
            if not (utm_hit and "utm_recorded" in self.types):
                return False
        if self.trigger is not None and (
            event.get("type") != "trigger_fired" or event.get("trigger") != self.trigger
        ):
            return False
        if self.contact_id is not None and event.get("contact_id") != self.contact_id:
            return False
        contact = event.get("contact") or {}
        if self.identified_only and contact.get("anonymous", True):
            return False
        if self.tag is not None:
            wanted = self.tag.casefold()
            if not any(str(t).casefold() == wanted for t in contact.get("tags", [])):
                return False
        hit = event.get("hit") or {}
        if (
            self.url_contains is not None
            and self.url_contains.casefold() not in str(hit.get("url", "")).casefold()
        ):
            return False
        utm = hit.get("utm") or {}
        if self.utm_source is not None and utm.get("utm_source") != self.utm_source:
            return False
        return not (self.utm_campaign is not None and utm.get("utm_campaign") != self.utm_campaign)
