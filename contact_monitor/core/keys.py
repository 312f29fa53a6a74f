"""API keys on requests: `Authorization: Bearer <key>`, for the GraphQL API (HTTP and websocket)
and for the tracking endpoints (a request with a valid key is an integration, never a visitor)."""

from __future__ import annotations

from contact_monitor.storage import Storage
from contact_monitor.storage.documents import Document


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def key_of(storage: Storage, header: str | None) -> Document | None:
    """The valid, unrevoked key an `Authorization` header carries, else None."""
    token = bearer_token(header)
    if not token or not token.isascii():  # keys are ASCII; this also refuses lone surrogates
        return None
    return await storage.api_keys.authenticate(token)
