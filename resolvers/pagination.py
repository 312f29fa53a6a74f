"""Opaque cursors and page-size limits shared by every connection."""

from __future__ import annotations

import base64
import binascii
import datetime as dt

from bson import ObjectId
from bson.errors import InvalidId

from contact_monitor.core.errors import BadUserInput

DEFAULT_PAGE = 20
MAX_PAGE = 100
# The tags query pages through a registry, not a history: larger pages.
TAG_PAGE = 100
MAX_TAG_PAGE = 1000


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    if not 1 <= first <= MAX_PAGE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE}, not {first}")
    return first


def encode_cursor(at: dt.datetime, key: object) -> str:
    raw = f"{at.astimezone(dt.UTC).isoformat()}|{key}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, *, object_id: bool) -> tuple[dt.datetime, object] | None:
    """(time, id) from a cursor of this API; `BadUserInput` for anything else."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, key = raw.split("|", 1)
        at = dt.datetime.fromisoformat(at_text)
        return at, ObjectId(key) if object_id else key
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidId):
        raise BadUserInput("invalid cursor: pass the endCursor or a cursor of a previous page") from None
