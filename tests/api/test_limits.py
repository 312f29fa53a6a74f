"""What one GraphQL request may cost, and that every refusal says why with a code."""

import pytest
from graphql import GraphQLError, parse

from api.schema.limits import (
    MAX_ALIASES,
    MAX_COST,
    MAX_TOKENS,
    DocumentStore,
    InternalErrorMask,
    query_cost,
)

PAGE = """query($n: Int, $m: Int) {
  contacts(first: $n) { edges { node { id hits(first: $m) { edges { node { url } } } } } }
}"""


def cost(query, variables=None, operation=None):
    return query_cost(parse(query), operation, variables or {})


def test_page_sizes_multiply_through_nested_connections():
    # contacts, edges, nodes: 100 each; hits, hit edges, hit nodes: 100 * 100 each
    assert cost(PAGE, {"n": 100, "m": 100}) == 3 * 100 + 3 * 10_000
    assert cost(PAGE, {"n": 1, "m": 1}) == 6
    # Without values, a connection counts its default page of 20.
    assert cost(PAGE) == 3 * 20 + 3 * 400


def test_a_first_the_cost_cannot_read_counts_as_the_largest_page():
    two = "query Q($n: Int = 100) { a: contacts(first: $n) { edges { node { hits(first: $n) { edges { node { url } } } } } } b: contacts(first: $n) { edges { node { id } } } }"
    # the default of the variable counts: 30,300 + 300
    assert cost(two) == 3 * 100 + 3 * 10_000 + 3 * 100
    assert cost(PAGE, {"n": 100.0, "m": 100.0}) == cost(PAGE, {"n": 100, "m": 100})  # Int coercion
    assert cost(PAGE, {"n": None, "m": None}) == cost(PAGE)  # null: the default page
    assert cost(PAGE, {"n": "x"}) == cost(PAGE, {"n": 100, "m": 20})  # unreadable: the largest
    # a connection without `first` is its default page, not one object
    assert cost("{ contacts { edges { node { hits { edges { node { url } } } } } } }") == cost(PAGE)


def test_fragments_and_list_fields_count_too():
    query = """{ contacts(first: 10) { edges { node { ...C } } } }
    fragment C on Contact { devices { trackingId } utmTags { title } }"""
    assert cost(query) == 3 * 10 + 10 * 20 + 10 * 100  # devices: 20 each, utmTags: 100 each


def test_at_the_limit_and_past_it():
    assert cost("query { tags { name } }") == 100  # the tag list counts as its default page
    assert cost("query { tags(first: 1000) { name } }") == 1_000
    five = (
        "{ "
        + " ".join(
            f"a{i}: contacts(first: 100) {{ edges {{ node {{ hits(first: 100) {{ edges {{ node {{ url }} }} }} }} }} }}"
            for i in range(5)
        )
        + " }"
    )
    assert cost(five) > MAX_COST
    one = "{ contacts(first: 100) { edges { node { hits(first: 100) { edges { node { url } } } } } } }"
    assert cost(one) <= MAX_COST


async def test_a_query_past_the_cost_limit_is_refused_before_it_runs(api):
    query = (
        "{ "
        + " ".join(
            f"a{i}: contacts(first: 100) {{ edges {{ node {{ hits(first: 100) {{ edges {{ node {{ url }} }} }}"
            f" timeline(first: 100) {{ edges {{ cursor }} }} }} }} }}"
            for i in range(5)
        )
        + " }"
    )
    error = await api.error(query)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert f"exceeds the limit of {MAX_COST}" in error["message"]
    data = await api(PAGE, {"n": 100, "m": 100})  # one such page is fine
    assert data["contacts"]["edges"] == []


async def test_aliases_past_the_limit_are_refused(api):
    at_limit = "{ " + " ".join(f"t{i}: tags {{ name }}" for i in range(MAX_ALIASES)) + " }"
    assert len(await api(at_limit)) == MAX_ALIASES
    past = "{ " + " ".join(f"t{i}: tags {{ name }}" for i in range(MAX_ALIASES + 1)) + " }"
    error = await api.error(past)
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and "aliases" in error["message"]


async def test_tokens_past_the_limit_are_refused(api):
    past = "{ " + " ".join("tags { name }" for _ in range(MAX_TOKENS // 4)) + " }"
    error = await api.error(past)
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and "token" in error["message"].lower()


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($n: Int!) { contacts(first: $n) { totalCount } }", {"n": "x"}),
        ("query($n: Int!) { contacts(first: $n) { totalCount } }", {}),
        ("query($d: DateTime) { contacts(filter: {activeSince: $d}) { totalCount } }", {"d": "not a date"}),
        (
            'query($t: [TimelineType!]) { contact(id: "x") { timeline(types: $t) { edges { cursor } } } }',
            {"t": ["NOPE"]},
        ),
        ("{ nope }", {}),
        ("{ tags { ", {}),
    ],
)
async def test_bad_queries_and_variables_are_bad_user_input(api, query, variables):
    error = await api.error(query, variables)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error


@pytest.mark.parametrize(
    ("method", "content", "params", "status"),
    [
        ("POST", b"{bad", None, 400),
        ("POST", b"", None, 400),
        ("GET", None, {"query": 'mutation { deleteContact(id: "x") }'}, 400),
    ],
)
async def test_refused_requests_answer_json_with_a_code(api, method, content, params, status):
    key = await api.key("write")
    response = await api.harness.client.request(
        method,
        "/graphql",
        content=content,
        params=params,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == status
    body = response.json()
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_internal_errors_are_masked_with_their_own_code():
    mask = InternalErrorMask(should_mask_error=lambda e: True, error_message="Internal server error")
    masked = mask.anonymise_error(GraphQLError("secret", original_error=RuntimeError("secret")))
    assert masked.message == "Internal server error"
    assert masked.extensions == {"code": "INTERNAL_SERVER_ERROR"}


async def test_a_chunked_body_is_limited_like_a_declared_one(api):
    key = await api.key("read")

    async def chunks():
        for _ in range(20):
            yield b" " * (64 * 1024)  # 1.25 MiB in all, with no Content-Length

    response = await api.harness.client.post(
        "/graphql",
        content=chunks(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_graphiql_page_is_public_but_running_a_query_needs_a_key(make_harness):
    async with make_harness(graphiql=True) as h:
        page = await h.client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        run = await h.client.get(
            "/graphql", params={"query": "{ contacts { totalCount } }"}, headers={"Accept": "text/html"}
        )
        assert run.status_code == 401
        assert run.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_the_document_cache_is_bounded_by_bytes():
    store = DocumentStore(max_bytes=1000, max_query_bytes=400)
    for i in range(10):
        store.parse("{ tags { name } }" + " " * 300 + f"# {i}", {})
    assert store.bytes <= 1000 and len(store.entries) == 3
    store.parse("{ tags { name } }" + " " * 500, {})  # over max_query_bytes: parsed, not kept
    assert len(store.entries) == 3
    first = store.parse("{ fields { alias } }", {})
    assert store.parse("{ fields { alias } }", {}) is first  # a hit returns the same document
    store.forget("{ fields { alias } }", {})
    assert store.parse("{ fields { alias } }", {}) is not first
    counted = DocumentStore(max_entries=2)
    for i in range(5):
        counted.parse(f"{{ tags {{ name }} }} # {i}", {})
    assert len(counted.entries) == 2


async def test_invalid_documents_are_not_kept(api):
    from api.schema import documents

    await api.error("{ nope }")
    assert not any(query == "{ nope }" for query, _ in documents.entries)
    await api("{ fields { alias } }")
    assert any(query == "{ fields { alias } }" for query, _ in documents.entries)
