"""Contact fields: the core fields, how a value is validated by type, which fields identify a
contact, the cached registry, and creating or changing a field (with its unique keys)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from pymongo.errors import DuplicateKeyError

from contact_monitor.core.errors import FieldError
from contact_monitor.storage import Storage
from contact_monitor.storage.fields import DEFAULT_MAX_LENGTH, FIELD_TYPES, FieldDefinition
from contact_monitor.text import parse_flag, strip_markup

FieldValue = str | float | bool

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_FIELD_LENGTH = 4096
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_TEL = re.compile(r"^\+?[0-9 ()./-]{3,32}$")
_LOCALE = re.compile(r"^[a-zA-Z]{2,3}(?:[_-][a-zA-Z0-9]{2,8})*$")

# Parameters with a meaning of their own in the tracking protocol (docs/tracking-protocol.md,
# "Parameters"). No contact field may take one of these names, except the four Mautic itself
# has as contact fields too.
TRACKING_PARAMETERS = frozenset(
    [
        "page_url",
        "page_title",
        "page_language",
        "page_referrer",
        "referrer",
        "language",
        "url",
        "title",
        "counter",
        "timezone_offset",
        "timezone",
        "resolution",
        "platform",
        "fingerprint",
        "adblock",
        "do_not_track",
        "mautic_device_id",
        "mtc_id",
        "identity_hash",
        "tags",
        "d",
        "ct",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
    ]
)
FIELD_NAMES_FROM_PARAMETERS = frozenset({"fingerprint", "title", "url", "timezone"})


class FieldValueError(ValueError):
    """A submitted value does not fit its field's type; the message says why."""


# Mautic's core contact fields. Nothing is publicly updatable after install; only email is unique.
CORE_FIELDS: tuple[FieldDefinition, ...] = (
    FieldDefinition("title", "Title", core=True),
    FieldDefinition("firstname", "First Name", core=True),
    FieldDefinition("lastname", "Last Name", core=True),
    FieldDefinition("company", "Company", core=True),
    FieldDefinition("position", "Position", core=True),
    FieldDefinition("email", "Email", "email", unique=True, core=True, max_length=254),
    FieldDefinition("mobile", "Mobile", "tel", core=True),
    FieldDefinition("phone", "Phone", "tel", core=True),
    FieldDefinition("fax", "Fax", "tel", core=True),
    FieldDefinition("address1", "Address Line 1", core=True),
    FieldDefinition("address2", "Address Line 2", core=True),
    FieldDefinition("city", "City", core=True),
    FieldDefinition("state", "State", core=True),
    FieldDefinition("zipcode", "Zip Code", core=True, max_length=32),
    FieldDefinition("country", "Country", "country", core=True),
    FieldDefinition("preferred_locale", "Preferred Locale", "locale", core=True, max_length=32),
    FieldDefinition("timezone", "Preferred Timezone", "timezone", core=True, max_length=64),
    FieldDefinition("website", "Website", "url", core=True, max_length=2048),
)

# A contact with none of these is anonymous (Mautic's Lead::isAnonymous).
IDENTIFYING_FIELDS = ("email", "firstname", "lastname", "company")


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_value(definition: FieldDefinition, raw: str | list[str]) -> FieldValue | None:
    """The stored form of `raw`, `None` when it is empty, or `FieldValueError` when it is invalid."""
    if isinstance(raw, list):
        # Several values for one field: join them as Mautic stores multiselects.
        raw = "|".join(item.strip() for item in raw if item.strip())
    text = raw.strip()
    if not text:
        return None
    kind = definition.type
    if kind == "boolean":
        flag = parse_flag(text)
        if flag is None:
            raise FieldValueError("expected a yes/no value")
        return flag
    if kind == "number":
        try:
            number = float(text.replace(",", "."))
        except ValueError:
            raise FieldValueError("expected a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise FieldValueError("expected a finite number")
        return number
    if kind == "date":
        try:
            return dt.date.fromisoformat(text[:10]).isoformat()
        except ValueError:
            raise FieldValueError("expected a date as YYYY-MM-DD") from None
    if kind == "datetime":
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise FieldValueError("expected an ISO 8601 date and time") from None
        if parsed.tzinfo is not None:
            try:
                parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
            except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
                raise FieldValueError("expected an ISO 8601 date and time") from None
        return parsed.isoformat(timespec="seconds")
    if len(text) > definition.max_length:
        raise FieldValueError(f"longer than {definition.max_length} characters")
    if kind == "email":
        if not _EMAIL.match(text) or len(text) > 254:
            raise FieldValueError("not a valid email address")
        local, domain = text.rsplit("@", 1)
        return f"{local}@{domain.lower()}"
    if kind == "url":
        try:
            parts = urlsplit(text)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise FieldValueError("expected an http(s) URL") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FieldValueError("expected an http(s) URL")
        return text
    if kind == "tel":
        if not _TEL.match(text):
            raise FieldValueError("not a valid phone number")
        return text
    if kind == "timezone":
        if text not in _timezones():
            raise FieldValueError("not an IANA time zone such as Europe/Paris")
        return text
    if kind == "locale":
        if not _LOCALE.match(text):
            raise FieldValueError("not a locale such as en_US")
        return text.replace("-", "_")
    # text and country: free text with markup stripped (values end up in dashboards).
    cleaned = strip_markup(text).strip()
    if not cleaned:
        raise FieldValueError("nothing left after removing markup")
    return cleaned


def is_timezone(name: str) -> bool:
    return name in _timezones()


def timezone_from_offset(offset_minutes: int) -> str | None:
    """A fixed-offset IANA zone for a browser's `getTimezoneOffset()` (whole hours only)."""
    if offset_minutes % 60 or not -14 * 60 <= offset_minutes <= 12 * 60:
        return None
    hours = offset_minutes // 60
    # Etc/GMT signs are inverted (POSIX): UTC+2, offset -120, is Etc/GMT-2.
    return "Etc/UTC" if hours == 0 else f"Etc/GMT{hours:+d}"


def is_identified(fields: Mapping[str, object]) -> bool:
    """A contact stops being anonymous once one of IDENTIFYING_FIELDS has a value."""
    return any(fields.get(alias) for alias in IDENTIFYING_FIELDS)


def submitted_fields(
    params: Mapping[str, str | list[str]], registry: Mapping[str, FieldDefinition]
) -> tuple[dict[str, FieldValue], list[str]]:
    """The valid values of publicly updatable fields; invalid ones are dropped with a warning.
    Parameter names match aliases case-insensitively; an exact lower-case name wins."""
    raw: dict[str, str | list[str]] = {}
    for key, value in params.items():
        alias = key.lower()
        definition = registry.get(alias)
        if definition is None or not definition.publicly_updatable:
            continue
        if alias not in raw or key == alias:
            raw[alias] = value
    values: dict[str, FieldValue] = {}
    warnings: list[str] = []
    for alias, value in raw.items():
        try:
            cleaned = validate_value(registry[alias], value)
        except FieldValueError as exc:
            warnings.append(f"field {alias!r} was ignored: {exc}")
            continue
        if cleaned is not None:  # empty values never overwrite data
            values[alias] = cleaned
    return values, warnings


class FieldRegistry:
    """The field definitions, re-read from MongoDB at most every `ttl` seconds (the CLI changes them
    from another process)."""

    def __init__(self, storage: Storage, ttl: float) -> None:
        self.storage = storage
        self.ttl = ttl
        self._fields: dict[str, FieldDefinition] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self.invalidated = asyncio.Event()  # set by every invalidation (tests wait on it)

    async def get(self) -> Mapping[str, FieldDefinition]:
        if time.monotonic() - self._loaded_at < self.ttl:
            return self._fields
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self.ttl:
                self._fields = {f.alias: f for f in await self.storage.fields.all()}
                self._loaded_at = time.monotonic()
        return self._fields

    def invalidate(self) -> None:
        """Read the registry again at the next request (another process changed a field)."""
        self._loaded_at = float("-inf")
        self.invalidated.set()

    async def public_aliases(self) -> frozenset[str]:
        """Aliases of publicly updatable fields (they take precedence over deprecated parameters)."""
        return frozenset(alias for alias, f in (await self.get()).items() if f.publicly_updatable)


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: FieldDefinition
    indexed: int  # contacts newly indexed by the field's unique key
    conflicts: int  # contacts sharing a value with an older contact, left unindexed


def _check_type(kind: object) -> None:
    if kind not in FIELD_TYPES:
        raise FieldError(f"unknown type {kind!r}; choose one of: {', '.join(FIELD_TYPES)}")


async def create_field(
    storage: Storage,
    alias: str,
    *,
    type: str = "text",
    label: str | None = None,
    publicly_updatable: bool = False,
    unique: bool = False,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> FieldChange:
    """A new field; when unique, existing contacts holding a value are indexed by it."""
    if not ALIAS_PATTERN.match(alias):
        raise FieldError(
            f"invalid alias {alias!r}: use 1-64 lower-case letters, digits and _, starting with a letter"
        )
    if alias in TRACKING_PARAMETERS and alias not in FIELD_NAMES_FROM_PARAMETERS:
        raise FieldError(f"{alias!r} is a tracking parameter and cannot be a contact field")
    _check_type(type)
    if not 1 <= max_length <= MAX_FIELD_LENGTH:
        raise FieldError(f"max length must be between 1 and {MAX_FIELD_LENGTH}")
    definition = FieldDefinition(
        alias,
        label or alias.replace("_", " ").title(),
        type,  # type: ignore[arg-type]  # checked above
        publicly_updatable=publicly_updatable,
        unique=unique,
        max_length=max_length,
    )
    try:
        field = await storage.fields.create(definition)
    except DuplicateKeyError:
        raise FieldError(f"field {alias!r} already exists") from None
    indexed, conflicts = await storage.contacts.index_unique_field(alias) if field.unique else (0, 0)
    return FieldChange(field, indexed, conflicts)


async def update_field(storage: Storage, alias: str, **changes: object) -> FieldChange:
    """Changed flags, label or type (None leaves one as it is); the contacts' unique keys follow a
    change of `unique` either way."""
    allowed = {"label", "type", "publicly_updatable", "unique", "max_length"}
    values = {key: value for key, value in changes.items() if value is not None}
    if unknown := set(values) - allowed:
        raise FieldError(f"cannot change {', '.join(sorted(unknown))}")
    if "type" in values:
        _check_type(values["type"])
    before = await storage.fields.get(alias)
    if before is not None and before.core and values.get("type", before.type) != before.type:
        # Mautic's core fields are what tracking, forms and identity rely on (email is the
        # identity key): another type would make every stored and submitted value invalid.
        raise FieldError(f"{alias!r} is a core field: its type ({before.type}) cannot change")
    field = await storage.fields.update(alias, values)
    if before is None or field is None:
        raise FieldError(f"no field {alias!r}")
    indexed = conflicts = 0
    if before.unique != field.unique:
        if field.unique:
            indexed, conflicts = await storage.contacts.index_unique_field(alias)
        else:
            await storage.contacts.unindex_unique_field(alias)
    return FieldChange(field, indexed, conflicts)


async def install_core_fields(storage: Storage) -> None:
    await storage.fields.install(CORE_FIELDS)
