"""The typed, limited form of one tracking request: `Hit` (pure; built before any I/O)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from contact_monitor.core.tags import TagChanges, parse_tags
from contact_monitor.core.utm import extract_utm
from contact_monitor.text import parse_flag
from ingest.payload import PROOF_PARAMETERS, Params, ParamValue, PayloadError, decode_clickthrough

MAX_URL_LENGTH = 4096
MAX_TITLE_LENGTH = 191
MAX_SHORT_LENGTH = 64
MAX_QUERY_VALUE_LENGTH = 1024
MAX_LANGUAGES = 10
TRACKING_ID = re.compile(r"[0-9a-z]{23}")
# The page-view counter of mtc.js: a non-negative integer that fits MongoDB's int64.
MAX_COUNTER = 2**63 - 1
COUNTER = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Browser evidence sent by mtc.js; stored per hit and per device, never an identity by itself."""

    hash: str | None = None
    resolution: str | None = None
    timezone_offset: int | None = None
    platform: str | None = None
    adblock: bool | None = None
    do_not_track: bool | None = None

    def as_document(self) -> dict[str, object]:
        return {
            "hash": self.hash,
            "resolution": self.resolution,
            "timezone_offset": self.timezone_offset,
            "platform": self.platform,
            "adblock": self.adblock,
            "do_not_track": self.do_not_track,
        }

    def __bool__(self) -> bool:
        return any(value is not None for value in self.as_document().values())


@dataclass(frozen=True, slots=True)
class Hit:
    occurred_at: dt.datetime
    url: str
    title: str
    referrer: str
    language: str
    browser_languages: tuple[str, ...]
    counter: int | None
    timezone: str | None
    fingerprint: Fingerprint
    utm: Mapping[str, str]
    tags: TagChanges
    clickthrough: Mapping[str, object]
    device_tracking_id: str | None
    params: Params
    query: Mapping[str, ParamValue]
    privacy: Mapping[str, bool] = field(default_factory=dict)
    warnings: tuple[str, ...] = field(default=())


def _last(value: ParamValue | None) -> str:
    if isinstance(value, list):
        return value[-1] if value else ""
    return value or ""


def browser_languages(header: str | None) -> tuple[str, ...]:
    """`Accept-Language` as a list with `;q=` weights stripped (Mautic keeps them by accident)."""
    if not header:
        return ()
    languages = []
    for part in header.split(","):
        tag = part.split(";", 1)[0].strip()
        if tag and tag != "*" and len(tag) <= 35:
            languages.append(tag)
    return tuple(dict.fromkeys(languages))[:MAX_LANGUAGES]


def build_hit(
    params: Params,
    *,
    now: dt.datetime,
    warnings: list[str],
    referer_header: str | None,
    accept_language: str | None,
    device_cookie: str | None,
    field_aliases: frozenset[str] = frozenset(),
    privacy: Mapping[str, bool] | None = None,
) -> Hit:
    """Read the known parameters into a `Hit`.

    `field_aliases` are the publicly updatable contact fields: `url` and `title` are deprecated
    aliases of `page_url` / `page_title` only when they are not among them. Without `page_url`
    the `Referer` header (the page that loaded the pixel or the script) is the page URL.
    """
    warn = warnings.append

    def text(key: str, limit: int) -> str:
        raw = params.get(key)
        if not raw:  # most keys are absent
            return ""
        value = _last(raw).strip()
        if len(value) > limit:
            warn(f"{key} was cut to {limit} characters")
            value = value[:limit]
        return value

    url = text("page_url", MAX_URL_LENGTH)
    if not url and "url" not in field_aliases:
        url = text("url", MAX_URL_LENGTH)
    if not url and referer_header:
        url = referer_header[:MAX_URL_LENGTH]
    title = text("page_title", MAX_TITLE_LENGTH)
    if not title and "title" not in field_aliases:
        title = text("title", MAX_TITLE_LENGTH)
    referrer = text("page_referrer", MAX_URL_LENGTH) or text("referrer", MAX_URL_LENGTH)
    language = text("page_language", MAX_SHORT_LENGTH) or text("language", MAX_SHORT_LENGTH)

    counter: int | None = None
    raw_counter = text("counter", 20)
    if raw_counter:
        if COUNTER.fullmatch(raw_counter) and int(raw_counter) <= MAX_COUNTER:
            counter = int(raw_counter)
        else:
            warn(f"counter was not an integer from 0 to {MAX_COUNTER} and was ignored")

    offset: int | None = None
    raw_offset = text("timezone_offset", 20)
    if raw_offset:
        try:
            minutes = float(raw_offset)
        except ValueError:
            minutes = float("nan")
        # NaN and the infinities fail the range check too.
        if -24 * 60 <= minutes <= 24 * 60:
            offset = int(minutes)
        else:
            warn("timezone_offset was not a number of minutes and was ignored")

    fingerprint = Fingerprint(
        hash=text("fingerprint", 128) or None,
        resolution=text("resolution", 32) or None,
        timezone_offset=offset,
        platform=text("platform", MAX_SHORT_LENGTH) or None,
        adblock=parse_flag(text("adblock", 8)) if "adblock" in params else None,
        do_not_track=parse_flag(text("do_not_track", 8)) if "do_not_track" in params else None,
    )

    tags = TagChanges()
    if params.get("tags"):
        tags = parse_tags(params["tags"])
        warnings.extend(tags.warnings)

    clickthrough: Mapping[str, object] = {}
    raw_ct = _last(params.get("ct"))
    if raw_ct:
        try:
            clickthrough = decode_clickthrough(raw_ct)
        except PayloadError as exc:
            warn(f"parameter 'ct' was ignored: {exc}")

    # A malformed id is treated like no id at all: the visitor is new.
    device_id = next(
        (c for c in (device_cookie or "", text("mautic_device_id", 64)) if TRACKING_ID.fullmatch(c)), ""
    )

    # The stored query: everything received, values cut to a sane length; the raw `d` stays as
    # Mautic keeps it, decoded keys are already merged into the parameters.
    query: dict[str, ParamValue] = {}
    for key, value in params.items():
        if key in PROOF_PARAMETERS:  # a reusable credential: not kept
            continue
        if isinstance(value, list):
            query[key] = [item[:MAX_QUERY_VALUE_LENGTH] for item in value]
        else:
            query[key] = value[:MAX_QUERY_VALUE_LENGTH]

    return Hit(
        occurred_at=now,
        url=url,
        title=title,
        referrer=referrer,
        language=language,
        browser_languages=browser_languages(accept_language),
        counter=counter,
        timezone=text("timezone", MAX_SHORT_LENGTH) or None,
        fingerprint=fingerprint,
        utm=extract_utm(params),
        tags=tags,
        clickthrough=clickthrough,
        device_tracking_id=device_id or None,
        params=params,
        query=query,
        privacy=dict(privacy or {}),
        warnings=tuple(dict.fromkeys(warnings)),
    )
