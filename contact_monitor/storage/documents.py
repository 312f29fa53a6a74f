"""The shape every repository shares: documents as dicts, and keyset pages newest first."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

Document = dict[str, Any]
# The session of a MongoDB transaction (merges), or None: each write on its own.
Session = AsyncClientSession | None
# A keyset cursor: the (time, _id) of the last entry of the previous page.
Cursor = tuple[dt.datetime, Any]


def newest_first(time_field: str) -> list[tuple[str, int]]:
    """The sort of every page: newest first, ties broken by `_id`."""
    return [(time_field, DESCENDING), ("_id", DESCENDING)]


async def newest_per_contact(
    collection: AsyncCollection[Document],
    contact_ids: list[str],
    match: Document,
    time_field: str,
    before: Cursor | None,
    limit: int,
    id_field: str = "_id",
) -> dict[str, list[Document]]:
    """The newest `limit` documents of each contact matching `match`, after `before`: one
    command for a whole page of contacts, and per contact one range of the (contact_id, time)
    index cut at `limit` (a `$lookup` per contact id, MongoDB 5.1+), so a contact's long history
    is never read whole."""
    query = dict(match)
    if before is not None:
        query.update(older_than(time_field, before, id_field))
    per_contact: list[Document] = [{"$match": query}] if query else []
    per_contact += [{"$sort": {time_field: -1, id_field: -1}}, {"$limit": limit}]
    pipeline: list[Document] = [
        {"$documents": [{"_id": contact_id} for contact_id in dict.fromkeys(contact_ids)]},
        {
            "$lookup": {
                "from": collection.name,
                "localField": "_id",
                "foreignField": "contact_id",
                "pipeline": per_contact,
                "as": "docs",
            }
        },
    ]
    return {doc["_id"]: doc["docs"] async for doc in await collection.database.aggregate(pipeline)}


def older_than(time_field: str, cursor: Cursor, id_field: str = "_id") -> Document:
    """The entries after `cursor` in `newest_first(time_field)` order (ties broken by
    `id_field`)."""
    at, key = cursor
    return {"$or": [{time_field: {"$lt": at}}, {time_field: at, id_field: {"$lt": key}}]}


def moved_to(from_contact: str, to_contact: str) -> tuple[Document, Document]:
    """(filter, update) moving a contact's documents to another in a merge: each carries the
    ids it was merged away from (`merged_from`, newest last), so that the merge can be undone."""
    return {"contact_id": from_contact}, {
        "$set": {"contact_id": to_contact},
        "$push": {"merged_from": from_contact},
    }


def moved_back(winner: str, loser: str) -> tuple[Document, Document]:
    """(filter, update) undoing `moved_to(loser, winner)`: what came from the loser goes back;
    what the survivor got since stays."""
    return {"contact_id": winner, "merged_from": loser}, {
        "$set": {"contact_id": loser},
        "$pull": {"merged_from": loser},
    }
