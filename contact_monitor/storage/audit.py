"""The `audit` collection: who changed identity data, and when (merges, erasures)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pymongo.asynchronous.database import AsyncDatabase

from contact_monitor.storage.documents import Document, Session


class AuditRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.audit = db["audit"]

    async def create_indexes(self) -> None:
        await self.audit.create_index("at")

    async def log(
        self, action: str, now: dt.datetime, details: Mapping[str, object], *, session: Session = None
    ) -> None:
        await self.audit.insert_one({"action": action, "at": now, **details}, session=session)
