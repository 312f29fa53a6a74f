"""Queries: contact, contactByDevice, contacts with every filter and pagination, tags, fields, fingerprints."""

import datetime as dt

from tests.conftest import FIREFOX, IPHONE

CONTACT = """query($id: ID!) { contact(id: $id) {
    id email isAnonymous fields tags createdAt identifiedAt lastActive ipAddresses
    devices { trackingId userAgent { browser os deviceType } fingerprint { hash resolution timezoneOffset platform adblock doNotTrack } }
    lastHit { url title }
    hits(first: 2) { totalCount edges { cursor node { url title referrer language leftAt timeOnPage ip query
        utm { source campaign } userAgent { browser } fingerprint { hash } device { trackingId } } }
        pageInfo { hasNextPage endCursor } }
    utmTags { title icon utm { source medium campaign } }
} }"""


async def test_a_contact_as_the_server_side_integration_reads_it(api):
    h = api.harness
    await h.field("email")
    await h.event(
        page_url="https://s.test/?utm_source=twitter&utm_medium=social&utm_campaign=Launch",
        page_title="Landing",
        fingerprint="fp1",
        resolution="1920x1080",
        timezone_offset="-60",
        platform="Windows",
        adblock="true",
        do_not_track="false",
    )
    await h.event(page_url="https://s.test/pricing", page_title="Pricing", page_referrer="https://s.test/")
    body = await h.event(page_url="https://s.test/signup", email="ann@example.com", tags="Trial")
    # The site's server reads the mtc_id cookie (here: the id the tracker answered) and asks for the contact.
    contact = (await api(CONTACT, {"id": body["id"]}))["contact"]
    assert contact["id"] == body["id"] and contact["email"] == "ann@example.com"
    assert contact["isAnonymous"] is False and contact["identifiedAt"]
    assert contact["tags"] == ["Trial"] and contact["fields"]["email"] == "ann@example.com"
    assert contact["ipAddresses"] == ["203.0.113.10"]
    [device] = contact["devices"]
    assert device["trackingId"] == body["device_id"] and device["userAgent"]["browser"] == "Chrome"
    assert device["fingerprint"] == {
        "hash": "fp1",
        "resolution": "1920x1080",
        "timezoneOffset": -60,
        "platform": "Windows",
        "adblock": True,
        "doNotTrack": False,
    }
    assert contact["lastHit"]["url"] == "https://s.test/signup"
    hits = contact["hits"]
    assert hits["totalCount"] == 3 and hits["pageInfo"]["hasNextPage"] is True
    newest, second = (edge["node"] for edge in hits["edges"])
    assert newest["url"] == "https://s.test/signup" and newest["leftAt"] is None
    assert second["title"] == "Pricing" and second["referrer"] == "https://s.test/"
    assert second["leftAt"] and second["timeOnPage"] >= 0
    assert newest["device"]["trackingId"] == body["device_id"]
    assert newest["query"]["email"] == "ann@example.com"
    older = await api(
        """query($id: ID!, $after: String) { contact(id: $id) { hits(first: 2, after: $after) {
        edges { node { url utm { source campaign } fingerprint { hash } } } pageInfo { hasNextPage } } } }""",
        {"id": body["id"], "after": hits["pageInfo"]["endCursor"]},
    )
    page = older["contact"]["hits"]
    assert [e["node"]["url"] for e in page["edges"]] == [
        "https://s.test/?utm_source=twitter&utm_medium=social&utm_campaign=Launch"
    ]
    assert page["edges"][0]["node"]["utm"] == {"source": "twitter", "campaign": "Launch"}
    assert page["pageInfo"]["hasNextPage"] is False
    assert contact["utmTags"] == [
        {
            "title": "UTM Campaign: Launch",
            "icon": "fa-twitter",
            "utm": {"source": "twitter", "medium": "social", "campaign": "Launch"},
        }
    ]


async def test_merged_ids_resolve_and_unknown_ids_are_null(api):
    h = api.harness
    await h.field("email")
    async with h.browser() as one:
        known = await h.event(one, page_url="a", email="ann@example.com")
    async with h.browser(FIREFOX) as two:
        anonymous = await h.event(two, page_url="b")
        await h.event(two, page_url="c", email="ann@example.com")
    query = "query($id: ID!) { contact(id: $id) { id } }"
    assert (await api(query, {"id": anonymous["id"]}))["contact"]["id"] == known["id"]
    assert (await api(query, {"id": "0" * 24}))["contact"] is None


async def test_contact_by_device(api):
    body = await api.harness.event(page_url="a")
    query = "query($t: String!) { contactByDevice(trackingId: $t) { id } }"
    assert (await api(query, {"t": body["device_id"]}))["contactByDevice"]["id"] == body["id"]
    assert (await api(query, {"t": "x" * 23}))["contactByDevice"] is None


LIST = """query($filter: ContactFilter, $first: Int, $after: String) {
    contacts(filter: $filter, first: $first, after: $after) {
        totalCount edges { cursor node { id email } } pageInfo { hasNextPage endCursor } } }"""


async def ids(api, filter=None, **variables):
    data = await api(LIST, {"filter": filter, **variables})
    return [edge["node"]["id"] for edge in data["contacts"]["edges"]]


async def test_filters(api):
    h = api.harness
    await h.field("email")
    await h.field("plan", type="text", max_length=50)
    async with h.browser() as b1:
        ann = (
            await h.event(
                b1,
                page_url="https://s.test/pricing?utm_source=News&utm_campaign=Spring",
                email="ann@example.com",
                tags="VIP",
                plan="pro",
            )
        )["id"]
    async with h.browser(FIREFOX) as b2:
        bob = (await h.event(b2, page_url="https://s.test/blog", email="bob@example.com", plan="free"))["id"]
    async with h.browser(IPHONE) as b3:
        visitor = (await h.event(b3, page_url="https://s.test/Pricing", utm_source="ads"))["id"]

    assert await ids(api, {"email": "ANN@example.com"}) == [ann]
    assert await ids(api, {"tag": "vip"}) == [ann]
    assert await ids(api, {"tag": "unknown"}) == []
    assert sorted(await ids(api, {"identified": True})) == sorted([ann, bob])
    assert await ids(api, {"identified": False}) == [visitor]
    assert sorted(await ids(api, {"urlContains": "pricing"})) == sorted([ann, visitor])
    assert await ids(api, {"utmSource": "News"}) == [ann]
    assert await ids(api, {"utmCampaign": "Spring", "utmSource": "News"}) == [ann]
    assert await ids(api, {"utmSource": "ads"}) == [visitor]
    assert await ids(api, {"field": {"alias": "plan", "value": "free"}}) == [bob]
    assert await ids(api, {"urlContains": "pricing", "identified": True}) == [ann]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert await ids(api, {"activeSince": future}) == []
    assert len(await ids(api, {"activeSince": "2000-01-01T00:00:00+00:00"})) == 3
    # Most recently active first.
    assert await ids(api) == [visitor, bob, ann]


async def test_pagination_across_pages(api):
    h = api.harness
    for _ in range(5):
        async with h.browser() as b:
            await h.event(b, page_url="p")
    seen, after, pages = [], None, 0
    while True:
        data = (await api(LIST, {"first": 2, "after": after}))["contacts"]
        assert data["totalCount"] == 5
        seen += [edge["node"]["id"] for edge in data["edges"]]
        pages += 1
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
    assert pages == 3 and len(seen) == 5 and len(set(seen)) == 5
    assert seen == await ids(api, first=10)


async def test_tags_fields_and_fingerprints(api):
    h = api.harness
    async with h.browser() as one, h.browser() as two:
        a = await h.event(one, page_url="p", tags="VIP,Trial", fingerprint="shared")
        b = await h.event(two, page_url="p", tags="vip", fingerprint="shared")
    data = await api("{ tags { name contactCount } fields { alias type publiclyUpdatable unique core } }")
    assert data["tags"] == [{"name": "Trial", "contactCount": 1}, {"name": "VIP", "contactCount": 2}]
    email = next(f for f in data["fields"] if f["alias"] == "email")
    assert email == {
        "alias": "email",
        "type": "email",
        "publiclyUpdatable": False,
        "unique": True,
        "core": True,
    }
    found = await api('{ contactsByFingerprint(hash: "shared") { id } }')
    assert sorted(c["id"] for c in found["contactsByFingerprint"]) == sorted([a["id"], b["id"]])


async def test_tags_come_a_page_at_a_time(api):
    h = api.harness
    async with h.browser() as one:
        await h.event(one, page_url="p", tags=",".join(f"Tag{i:03}" for i in range(25)))
    first = (await api("{ tags(first: 10) { name contactCount } }"))["tags"]
    assert [t["name"] for t in first] == [f"Tag{i:03}" for i in range(10)]
    assert all(t["contactCount"] == 1 for t in first)
    # `after` matches names case-insensitively
    rest = (await api('{ tags(first: 100, after: "tag009") { name } }'))["tags"]
    assert [t["name"] for t in rest] == [f"Tag{i:03}" for i in range(10, 25)]
    error = await api.error("{ tags(first: 1001) { name } }")
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_error_shapes(api):
    too_many = await api.error("{ contacts(first: 1000) { totalCount } }")
    assert too_many["extensions"]["code"] == "BAD_USER_INPUT" and "between 1 and 100" in too_many["message"]
    bad_cursor = await api.error('{ contacts(after: "garbage!") { totalCount } }')
    assert bad_cursor["extensions"]["code"] == "BAD_USER_INPUT" and "cursor" in bad_cursor["message"]
    unknown = await api.error('{ contacts(filter: {field: {alias: "nope", value: "x"}}) { totalCount } }')
    assert unknown["extensions"]["code"] == "BAD_USER_INPUT" and "nope" in unknown["message"]
    syntax = await api.error("{ contacts( }")
    assert syntax["extensions"]["code"] == "BAD_USER_INPUT"
    invalid = await api.error("{ noSuchField }")
    assert invalid["extensions"]["code"] == "BAD_USER_INPUT"
    deepest_real = "{ contacts { edges { node { timeline { edges { node { ... on PageHit { device { fingerprint { hash } } } } } } } } } }"
    assert "errors" not in (await api.raw(deepest_real)).json()  # every real path fits the limit
    too_deep = "{ contacts { edges { node { lastHit { contact { lastHit { contact { lastHit { contact { lastHit { contact { id } } } } } } } } } } } }"
    error = await api.error(too_deep)
    assert (
        error["extensions"]["code"] == "BAD_USER_INPUT"
        and "exceeds maximum operation depth" in error["message"]
    )


async def test_internal_errors_are_masked():
    from graphql import GraphQLError

    from api.schema import should_mask
    from contact_monitor.core.errors import NotFound

    assert should_mask(GraphQLError("boom", original_error=RuntimeError("secret detail")))
    assert not should_mask(GraphQLError("x", original_error=NotFound("no contact")))
    assert not should_mask(GraphQLError("Syntax Error"))


async def test_email_filter_when_email_is_not_unique(api):
    h = api.harness
    await h.field("email", unique=False)
    body = await h.event(page_url="p", email="Ann@Example.com")
    data = await api('{ contacts(filter: {email: "ann@example.com"}) { edges { node { id } } } }')
    assert [e["node"]["id"] for e in data["contacts"]["edges"]] == [body["id"]]


async def test_url_contains_looks_at_a_bounded_number_of_the_newest_hits(harness):
    visitors = []
    for i in range(3):
        async with harness.browser() as browser:
            visitors.append((await harness.event(browser, page_url=f"https://s.test/pricing/{i}"))["id"])
    hits = harness.services.storage.hits
    assert sorted(await hits.contacts_with_url("PRICING", 10)) == sorted(visitors)
    assert await hits.contacts_with_url("pricing", 10, scan=1) == [visitors[-1]]  # the newest hit only
    assert len(await hits.contacts_with_url("pricing", 2)) == 2  # at most `limit` ids
    assert await hits.contacts_with_url("pricing.*", 10) == []  # the text is literal, not a regex


async def test_hits_get_only_the_indexes_a_query_needs(harness):
    """Every index costs each hit insert: no `occurred_at` index any more (`urlContains` reads
    the newest hits in `_id` order); one made by an earlier version is left to the operator
    (processes of that version may still use it)."""
    hits = harness.db.hits
    names = set(await hits.index_information())
    assert "occurred_at_-1" not in names
    assert {"contact_id_1_occurred_at_-1", "device_id_1_occurred_at_-1", "utm_records"} <= names
    await hits.create_index([("occurred_at", -1)])
    await harness.services.storage.create_indexes()
    assert "occurred_at_-1" in set(await hits.index_information())
