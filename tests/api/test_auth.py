"""API keys: who may do what, and that integrations are never tracked as visitors."""

import pytest

QUERY = "{ tags { name contactCount } }"
TAG = 'mutation($id: ID!) { tagContact(id: $id, add: ["vip"]) { tags } }'
FIELD = 'mutation { createField(alias: "plan") { alias } }'


async def test_missing_key_is_401_with_a_graphql_error(api):
    response = await api.raw(QUERY, role=None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "Authorization: Bearer" in body["errors"][0]["message"]


@pytest.mark.parametrize("key", ["nonsense", "cm_" + "x" * 43, "Basic abc"])
async def test_invalid_key_is_401(api, key):
    response = await api.raw(QUERY, key=key)
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_revoked_key_is_401(api):
    key = await api.key("read")
    assert (await api.raw(QUERY, key=key)).status_code == 200
    await api.harness.services.storage.api_keys.revoke("test-read")
    assert (await api.raw(QUERY, key=key)).status_code == 401


async def test_keys_are_stored_hashed(api):
    key = await api.key("admin")
    stored = await api.harness.db.api_keys.find_one({"_id": "test-admin"})
    assert key not in str(stored) and stored["hash"] and stored["role"] == "admin"


async def test_role_boundaries(api):
    contact = await api.harness.event(page_url="p")
    variables = {"id": contact["id"]}
    assert (await api(QUERY, role="read"))["tags"] == []
    error = await api.error(TAG, variables, role="read")
    assert error["extensions"]["code"] == "FORBIDDEN" and "write role" in error["message"]
    assert (await api(TAG, variables, role="write"))["tagContact"]["tags"] == ["vip"]
    assert (await api.error(FIELD, role="write"))["extensions"]["code"] == "FORBIDDEN"
    assert (await api(FIELD, role="admin"))["createField"]["alias"] == "plan"
    assert (await api(TAG, variables, role="admin"))["tagContact"]["tags"] == ["vip"]


async def test_requests_with_a_valid_key_are_never_tracked(api):
    key = await api.key("read")
    body = (
        await api.harness.client.post(
            "/mtc/event", data={"page_url": "p"}, headers={"Authorization": f"Bearer {key}"}
        )
    ).json()
    assert body["id"] is None and "API key" in body["warnings"][0]
    assert await api.harness.db.hits.count_documents({}) == 0
    tracked = (
        await api.harness.client.post(
            "/mtc/event", data={"page_url": "p"}, headers={"Authorization": "Bearer not-a-key"}
        )
    ).json()
    assert tracked["id"]


async def test_graphiql_only_when_enabled(make_harness):
    async with make_harness() as h:
        response = await h.client.get("/graphql", headers={"Accept": "text/html"})
        assert response.status_code == 401
    async with make_harness(graphiql=True) as h:
        response = await h.client.get("/graphql", headers={"Accept": "text/html"})
        assert response.status_code == 200 and "graphiql" in response.text.lower()


async def test_oversized_request_is_413(api):
    response = await api.harness.client.post(
        "/graphql", content=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
