"""Reading the API key of a request (`Authorization: Bearer <key>`)."""

from __future__ import annotations


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
