"""A contact's timeline after a realistic sequence of visits, tagging, identification and activity."""

from tests.conftest import FIREFOX

TIMELINE = """query($id: ID!, $first: Int, $after: String, $types: [TimelineType!]) {
  contact(id: $id) { timeline(first: $first, after: $after, types: $types) {
    edges { cursor node {
      __typename
      ... on PageHit { url occurredAt }
      ... on UtmRecorded { title icon utm { source medium campaign } occurredAt }
      ... on TagsChanged { added removed occurredAt }
      ... on FieldsUpdated { fields occurredAt }
      ... on ContactIdentified { fields occurredAt }
      ... on ContactMerged { mergedId hitsMoved occurredAt }
      ... on CustomActivity { type properties occurredAt }
    } }
    pageInfo { hasNextPage endCursor } } } }"""

RECORD = """mutation($ref: ContactRef!, $type: String!, $props: JSON) {
  recordActivity(contact: $ref, type: $type, properties: $props) { id type properties occurredAt } }"""


async def scenario(api):
    h = api.harness
    await h.field("email")
    async with h.browser() as laptop:  # the known customer
        known = await h.event(laptop, page_url="https://s.test/account", email="ann@example.com")
    async with h.browser(FIREFOX) as phone:  # an anonymous visit from a newsletter, then login
        anonymous = await h.event(
            phone, page_url="https://s.test/?utm_source=news&utm_medium=email&utm_campaign=Spring"
        )
        await h.event(phone, page_url="https://s.test/pricing", tags="Interested")
        await h.event(phone, page_url="https://s.test/login", email="ann@example.com")
    await api(
        RECORD,
        {"ref": {"email": "ann@example.com"}, "type": "forum_post", "props": {"thread": 7}},
        role="write",
    )
    return known["id"], anonymous["id"]


async def test_timeline_tells_the_story_newest_first(api):
    contact_id, merged_id = await scenario(api)
    data = await api(TIMELINE, {"id": contact_id, "first": 50})
    nodes = [edge["node"] for edge in data["contact"]["timeline"]["edges"]]
    kinds = [node["__typename"] for node in nodes]
    assert (
        kinds[0] == "CustomActivity"
        and nodes[0]["type"] == "forum_post"
        and nodes[0]["properties"] == {"thread": 7}
    )
    times = [node["occurredAt"] for node in nodes]
    assert times == sorted(times, reverse=True)
    for expected in (
        "PageHit",
        "UtmRecorded",
        "TagsChanged",
        "FieldsUpdated",
        "ContactIdentified",
        "ContactMerged",
    ):
        assert expected in kinds
    assert [n["url"] for n in nodes if n["__typename"] == "PageHit"] == [
        "https://s.test/login",
        "https://s.test/pricing",
        "https://s.test/?utm_source=news&utm_medium=email&utm_campaign=Spring",
        "https://s.test/account",
    ]
    utm = next(n for n in nodes if n["__typename"] == "UtmRecorded")
    assert utm["title"] == "UTM Campaign: Spring" and utm["icon"] == "fa-envelope-o"
    merged = next(n for n in nodes if n["__typename"] == "ContactMerged")
    assert merged["mergedId"] == merged_id and merged["hitsMoved"] == 2
    tags = next(n for n in nodes if n["__typename"] == "TagsChanged")
    assert tags["added"] == ["Interested"]
    assert data["contact"]["timeline"]["pageInfo"]["hasNextPage"] is False


async def test_types_filter_and_pagination(api):
    contact_id, _ = await scenario(api)
    only = await api(TIMELINE, {"id": contact_id, "types": ["PAGE_HIT", "UTM_RECORDED"]})
    kinds = {edge["node"]["__typename"] for edge in only["contact"]["timeline"]["edges"]}
    assert kinds == {"PageHit", "UtmRecorded"}
    everything = [
        e["node"]
        for e in (await api(TIMELINE, {"id": contact_id, "first": 100}))["contact"]["timeline"]["edges"]
    ]
    paged, after = [], None
    while True:
        page = (await api(TIMELINE, {"id": contact_id, "first": 3, "after": after}))["contact"]["timeline"]
        paged += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert paged == everything  # no gap, no duplicate across pages
