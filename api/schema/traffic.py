"""What the dashboard needs beyond contacts: who is asking (`viewer`), what the tracking
endpoints received per site (`sites`) and per minute (`hitsPerMinute`). docs/dashboard.md."""

from __future__ import annotations

import datetime as dt

import strawberry

from api.schema.types import Info
from contact_monitor.core.errors import BadUserInput
from contact_monitor.core.traffic import MAX_SITES, RECORDED

MAX_MINUTES = 120


@strawberry.type(description="The API key of this request.")
class Viewer:
    name: str
    role: str = strawberry.field(description="read, write or admin.")


@strawberry.type(description="Requests from one site with one outcome.")
class SiteOutcome:
    outcome: str = strawberry.field(
        description="`recorded`; `cors` (a browser request from an origin outside CM_CORS_ORIGINS: "
        "recorded, but the page's script cannot read the answer); or why it was not recorded "
        "(bot user agent, do-not-track, an API key, ...)."
    )
    count: int
    last_at: dt.datetime | None
    last_url: str | None = strawberry.field(description="The page URL of the last such request.")


@strawberry.type(description="A site (origin) the tracking endpoints heard from.")
class Site:
    origin: str = strawberry.field(
        description="The Origin header, else the origin of the page URL, else of the Referer."
    )
    last_heard_at: dt.datetime
    recorded: int
    outcomes: list[SiteOutcome] = strawberry.field(description="Most frequent first.")


@strawberry.type
class MinuteCount:
    minute: dt.datetime
    hits: int = strawberry.field(description="Requests recorded that minute (every server process).")


def _time(ms: str | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC) if ms and ms.isdigit() else None


async def viewer(info: Info) -> Viewer:
    return Viewer(name=info.context.key_name, role=info.context.role)


async def sites(info: Info, first: int = 20) -> list[Site]:
    if not 1 <= first <= MAX_SITES:
        raise BadUserInput(f"first must be between 1 and {MAX_SITES}, not {first}")
    found = []
    for origin, heard, fields in await info.context.services.traffic.sites(first):
        outcomes = [
            SiteOutcome(
                outcome=name,
                count=int(value),
                last_at=_time(fields.get(f"last:{name}")),
                last_url=fields.get(f"url:{name}") or None,
            )
            for name, value in fields.items()
            if ":" not in name and value.lstrip("-").isdigit()
        ]
        outcomes.sort(key=lambda o: -o.count)
        found.append(
            Site(
                origin=origin,
                last_heard_at=dt.datetime.fromtimestamp(heard / 1000, dt.UTC),
                recorded=next((o.count for o in outcomes if o.outcome == RECORDED), 0),
                outcomes=outcomes,
            )
        )
    return found


async def hits_per_minute(info: Info, minutes: int = 60) -> list[MinuteCount]:
    if not 1 <= minutes <= MAX_MINUTES:
        raise BadUserInput(f"minutes must be between 1 and {MAX_MINUTES}, not {minutes}")
    counts = await info.context.services.traffic.hits_per_minute(minutes)
    return [MinuteCount(minute=dt.datetime.fromtimestamp(m, dt.UTC), hits=n) for m, n in counts]
