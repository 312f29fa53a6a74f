"""API helpers: keys of each role and a `gql` call through the real ASGI app."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness


class Api:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.keys: dict[str, str] = {}

    async def key(self, role: str) -> str:
        if role not in self.keys:
            self.keys[role] = await self.harness.services.storage.api_keys.create(f"test-{role}", role)
        return self.keys[role]

    async def raw(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        role: str | None = "read",
        key: str | None = None,
    ) -> Any:
        headers = {}
        if key is None and role is not None:
            key = await self.key(role)
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return await self.harness.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, *, role: str = "read"
    ) -> Any:
        """The `data` of a query that must succeed."""
        response = await self.raw(query, variables, role=role)
        body = response.json()
        assert response.status_code == 200 and not body.get("errors"), body
        return body["data"]

    async def error(
        self, query: str, variables: dict[str, Any] | None = None, *, role: str = "read"
    ) -> dict[str, Any]:
        """The first error of a query that must fail."""
        body = (await self.raw(query, variables, role=role)).json()
        assert body.get("errors"), body
        return body["errors"][0]


@pytest.fixture
def api(harness: Harness) -> Api:
    return Api(harness)
