"""Reading contacts: by id, by device, by filter (a page at a time), by fingerprint."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re

from contact_monitor.core.errors import BadUserInput
from contact_monitor.core.fields import FieldValueError, validate_value
from contact_monitor.core.tags import clean_tag, tag_key
from contact_monitor.storage import Storage
from contact_monitor.storage.contacts import unique_key
from contact_monitor.storage.documents import Document
from resolvers.pagination import decode_cursor, encode_cursor

# urlContains / utm filters first collect matching contact ids; past this many they are cut.
MAX_FILTER_IDS = 10_000


async def contact_query(
    storage: Storage,
    *,
    email: str | None = None,
    tag: str | None = None,
    identified: bool | None = None,
    active_since: dt.datetime | None = None,
    url_contains: str | None = None,
    utm_source: str | None = None,
    utm_campaign: str | None = None,
    field_alias: str | None = None,
    field_value: str | None = None,
    points_at_least: int | None = None,
) -> Document:
    """The MongoDB query of a ContactFilter; every condition must hold."""
    clauses: list[Document] = []
    if email is not None:
        email_field = await storage.fields.get("email")
        if email_field is not None and email_field.unique:
            clauses.append({"ids": unique_key("email", email.strip())})  # indexed
        else:
            clauses.append({"fields.email": {"$regex": f"^{re.escape(email.strip())}$", "$options": "i"}})
    if tag is not None:
        names = await storage.tags.names([tag_key(clean_tag(tag))])
        clauses.append({"tags": next(iter(names.values()), None)} if names else {"_id": {"$in": []}})
    if identified is not None:
        clauses.append({"anonymous": not identified})
    if active_since is not None:
        if active_since.tzinfo is None:
            active_since = active_since.replace(tzinfo=dt.UTC)
        clauses.append({"last_active": {"$gte": active_since}})
    if url_contains:
        clauses.append({"_id": {"$in": await storage.hits.contacts_with_url(url_contains, MAX_FILTER_IDS)}})
    utm = {key: value for key, value in (("utm_source", utm_source), ("utm_campaign", utm_campaign)) if value}
    if utm:
        clauses.append({"_id": {"$in": await storage.hits.contacts_with_utm(utm, MAX_FILTER_IDS)}})
    if field_alias is not None:
        definition = await storage.fields.get(field_alias)
        if definition is None:
            raise BadUserInput(f"no contact field {field_alias!r}")
        try:
            value = validate_value(definition, field_value or "")
        except FieldValueError as exc:
            raise BadUserInput(f"field {field_alias!r}: {exc}") from None
        clauses.append({f"fields.{field_alias}": value})
    if points_at_least is not None:
        clauses.append({"points": {"$gte": points_at_least}})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


async def contacts_page(
    storage: Storage, query: Document, *, first: int, after: str | None, by_points: bool = False
) -> tuple[list[Document], bool, int]:
    """(contacts, has_next_page, total_count) for one page, most recently active first (or most
    points first)."""
    page_after: tuple[object, str] | None = None
    if by_points:
        page_after = decode_points_cursor(after)
    elif cursor := decode_cursor(after, object_id=False):
        page_after = (cursor[0], str(cursor[1]))
    order = "points" if by_points else "last_active"
    docs = await storage.contacts.search(query, after=page_after, limit=first + 1, order=order)
    total = await storage.contacts.count(query)
    return docs[:first], len(docs) > first, total


def contact_cursor(doc: Document, *, by_points: bool = False) -> str:
    if by_points:
        raw = f"points|{int(doc.get('points', 0))}|{doc['_id']}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    return encode_cursor(doc["last_active"], doc["_id"])


def decode_points_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        marker, points, key = raw.split("|", 2)
        if marker != "points":
            raise ValueError(marker)
        return int(points), key
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadUserInput(
            "invalid cursor: pass the endCursor of a previous page ordered the same way"
        ) from None


async def contact_by_device(storage: Storage, tracking_id: str) -> Document | None:
    device = await storage.devices.get(tracking_id)
    if device is None:
        return None
    return await storage.contacts.resolve(device["contact_id"])


async def contacts_by_fingerprint(storage: Storage, fingerprint_hash: str) -> list[Document]:
    ids = await storage.devices.contacts_with_fingerprint(fingerprint_hash)
    found = await storage.contacts.many(ids)
    return sorted(found.values(), key=lambda doc: doc["last_active"], reverse=True)
