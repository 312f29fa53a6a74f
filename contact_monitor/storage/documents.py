"""The shape every repository shares: documents as dicts, and keyset pages newest first."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import DESCENDING

Document = dict[str, Any]
# A keyset cursor: the (time, _id) of the last entry of the previous page.
Cursor = tuple[dt.datetime, Any]


def newest_first(time_field: str) -> list[tuple[str, int]]:
    """The sort of every page: newest first, ties broken by `_id`."""
    return [(time_field, DESCENDING), ("_id", DESCENDING)]


def newest_per_contact(match: Document, time_field: str, before: Cursor | None, limit: int) -> list[Document]:
    """An aggregation: the newest `limit` documents of each contact matching `match`, after
    `before`, as {_id: contact_id, docs: [...]} (one command for a whole page of contacts)."""
    query = dict(match)
    if before is not None:
        query.update(older_than(time_field, before))
    return [
        {"$match": query},
        {
            "$group": {
                "_id": "$contact_id",
                "docs": {"$topN": {"n": limit, "sortBy": {time_field: -1, "_id": -1}, "output": "$$ROOT"}},
            }
        },
    ]


def older_than(time_field: str, cursor: Cursor) -> Document:
    """The entries after `cursor` in `newest_first(time_field)` order."""
    at, key = cursor
    return {"$or": [{time_field: {"$lt": at}}, {time_field: at, "_id": {"$lt": key}}]}
