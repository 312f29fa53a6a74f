"""The `api_keys` collection: keys for the GraphQL API, stored as SHA-256 hashes only.

_id (name), hash, role (read | write | admin), created_at, last_used_at, revoked_at
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Literal, get_args

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from contact_monitor.storage.documents import Document

Role = Literal["read", "write", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
KEY_PREFIX = "cm_"


class ApiKeyError(ValueError):
    """A key cannot be created or revoked as asked; the message says why."""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.keys = db["api_keys"]

    async def create_indexes(self) -> None:
        await self.keys.create_index([("hash", ASCENDING)], unique=True)

    async def create(self, name: str, role: str) -> str:
        """A new key; only its hash is stored, so this is the one time it can be shown."""
        if role not in ROLES:
            raise ApiKeyError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not name.strip() or len(name) > 100:
            raise ApiKeyError("a key needs a name of 1-100 characters")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            await self.keys.insert_one(
                {
                    "_id": name,
                    "hash": key_hash(key),
                    "role": role,
                    "created_at": dt.datetime.now(dt.UTC),
                    "last_used_at": None,
                    "revoked_at": None,
                }
            )
        except DuplicateKeyError:
            raise ApiKeyError(f"a key named {name!r} already exists") from None
        return key

    async def all(self) -> list[Document]:
        return [doc async for doc in self.keys.find({}, {"hash": 0}).sort("_id", ASCENDING)]

    async def revoke(self, name: str) -> None:
        result = await self.keys.update_one(
            {"_id": name, "revoked_at": None}, {"$set": {"revoked_at": dt.datetime.now(dt.UTC)}}
        )
        if result.matched_count == 0:
            raise ApiKeyError(f"no active key named {name!r}")

    async def revoked_among(self, names: list[str]) -> set[str]:
        """Which of these key names are revoked (or gone)."""
        if not names:
            return set()
        active = {doc["_id"] async for doc in self.keys.find({"_id": {"$in": names}, "revoked_at": None})}
        return set(names) - active

    async def authenticate(self, key: str) -> Document | None:
        """The key's document when it exists and is not revoked."""
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        return await self.keys.find_one({"hash": key_hash(key), "revoked_at": None})
