"""Contact fields: their definitions and how a submitted value is validated by type (pure)."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args
from urllib.parse import urlsplit

FieldType = Literal[
    "text", "email", "number", "boolean", "date", "datetime", "url", "tel", "timezone", "locale", "country"
]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
FieldValue = str | float | bool

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEFAULT_MAX_LENGTH = 191
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_TEL = re.compile(r"^\+?[0-9 ()./-]{3,32}$")
_LOCALE = re.compile(r"^[a-zA-Z]{2,3}(?:[_-][a-zA-Z0-9]{2,8})*$")
_MARKUP = re.compile(r"<[^>]*(?:>|$)")
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class FieldValueError(ValueError):
    """A submitted value does not fit its field's type; the message says why."""


@dataclass(frozen=True, slots=True)
class FieldDefinition:
    alias: str
    label: str
    type: FieldType = "text"
    publicly_updatable: bool = False
    unique: bool = False
    core: bool = False
    max_length: int = DEFAULT_MAX_LENGTH


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
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise FieldValueError("expected a yes/no value")
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
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed.isoformat(timespec="seconds")
    if len(text) > definition.max_length:
        raise FieldValueError(f"longer than {definition.max_length} characters")
    if kind == "email":
        if not _EMAIL.match(text) or len(text) > 254:
            raise FieldValueError("not a valid email address")
        local, domain = text.rsplit("@", 1)
        return f"{local}@{domain.lower()}"
    if kind == "url":
        parts = urlsplit(text)
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
    cleaned = _MARKUP.sub("", text).strip()
    if not cleaned:
        raise FieldValueError("nothing left after removing markup")
    return cleaned


def is_timezone(name: str) -> bool:
    return name in _timezones()


def unique_key(alias: str, value: FieldValue) -> str:
    """The identity key of a unique field value: case-insensitive, as Mautic's MySQL collation is."""
    text = value if isinstance(value, str) else repr(value)
    return f"{alias}:{text.strip().casefold()}"


def timezone_from_offset(offset_minutes: int) -> str | None:
    """A fixed-offset IANA zone for a browser's `getTimezoneOffset()` (whole hours only)."""
    if offset_minutes % 60 or not -14 * 60 <= offset_minutes <= 12 * 60:
        return None
    hours = offset_minutes // 60
    # Etc/GMT signs are inverted (POSIX): UTC+2, offset -120, is Etc/GMT-2.
    return "Etc/UTC" if hours == 0 else f"Etc/GMT{hours:+d}"
