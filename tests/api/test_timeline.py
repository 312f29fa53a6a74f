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


async def test_utm_records_come_from_the_hits_and_from_records_written_before(api):
    """A hit with UTM codes is its own UtmRecorded entry (nothing else is written); records that
    an earlier version wrote to `utm_records` still appear, and pages of one entry walk both
    without a gap or a duplicate (a hit and its UTM entry share a time)."""
    h = api.harness
    async with h.browser() as browser:
        first = await h.event(browser, page_url="https://s.test/?utm_source=ads&utm_campaign=Old")
        await h.event(browser, page_url="https://s.test/?utm_source=news&utm_campaign=New")
    assert await h.db.utm_records.count_documents({}) == 0
    hits = [hit async for hit in h.db.hits.find().sort("occurred_at", 1)]
    assert all("utm_id" in hit for hit in hits)
    # What an earlier version wrote for the first hit, instead of its utm_id.
    await h.db.hits.update_one({"_id": hits[0]["_id"]}, {"$unset": {"utm_id": ""}})
    await h.db.utm_records.insert_one(
        {
            "contact_id": first["id"],
            "hit_id": hits[0]["_id"],
            "occurred_at": hits[0]["occurred_at"],
            "url": hits[0]["url"],
            "referrer": "",
            "utm_source": "ads",
            "utm_campaign": "Old",
        }
    )
    everything = (await api(TIMELINE, {"id": first["id"], "first": 100}))["contact"]["timeline"]["edges"]
    nodes = [edge["node"] for edge in everything]
    # A UTM entry's id is newer than its hit's: it comes first at the same time.
    assert [(n["__typename"], (n.get("utm") or {}).get("campaign")) for n in nodes] == [
        ("UtmRecorded", "New"),
        ("PageHit", None),
        ("UtmRecorded", "Old"),
        ("PageHit", None),
    ]
    assert [n["title"] for n in nodes if n["__typename"] == "UtmRecorded"] == [
        "UTM Campaign: New",
        "UTM Campaign: Old",
    ]
    paged, after = [], None
    while True:
        page = (await api(TIMELINE, {"id": first["id"], "first": 1, "after": after}))["contact"]["timeline"]
        paged += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert paged == nodes
    # The contact filters read the hits' own `utm`, which every version has written.
    found = await api('{ contacts(filter: {utmSource: "ads"}) { edges { node { id } } } }')
    assert [e["node"]["id"] for e in found["contacts"]["edges"]] == [first["id"]]
    found = await api('{ contacts(filter: {utmSource: "news"}) { edges { node { id } } } }')
    assert [e["node"]["id"] for e in found["contacts"]["edges"]] == [first["id"]]
