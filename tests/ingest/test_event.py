"""/mtc/event (what mtc.js posts to) and /mtc, plus who is not recorded."""

import json

from tests.conftest import CHROME


async def test_answers_mautic_json(harness):
    response = await harness.client.post(
        "/mtc/event",
        data={"page_url": "https://s.test/", "page_title": "Home"},
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    body = response.json()
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert set(body) == {"success", "id", "sid", "device_id", "events"}
    assert body["success"] == 1 and body["events"] == [] and body["sid"] == body["device_id"]
    hit = await harness.db.hits.find_one()
    assert hit["endpoint"] == "event" and hit["contact_id"] == body["id"] and hit["device_id"] == body["sid"]


async def test_query_and_body_merge_post_wins(harness):
    await harness.client.post("/mtc/event?page_title=query&page_language=en", data={"page_title": "body"})
    hit = await harness.db.hits.find_one()
    assert (hit["title"], hit["language"]) == ("body", "en")


async def test_json_body(harness):
    response = await harness.client.post(
        "/mtc/event",
        content=json.dumps({"page_url": "screen", "counter": 3, "tags": ["a", "b"]}),
        headers={"Content-Type": "application/json"},
    )
    assert response.json()["success"] == 1
    hit = await harness.db.hits.find_one()
    assert hit["url"] == "screen" and hit["counter"] == 3
    assert sorted((await harness.db.contacts.find_one())["tags"]) == ["a", "b"]


async def test_warnings_name_what_was_ignored(harness):
    await harness.field("email")
    body = await harness.event(page_url="p", email="not-an-email", timezone_offset="east", counter="x")
    assert body["success"] == 1
    joined = " ".join(body["warnings"])
    assert "email" in joined and "timezone_offset" in joined and "counter" in joined


async def test_bots_are_not_recorded(harness):
    response = await harness.client.post(
        "/mtc/event",
        data={"page_url": "p"},
        headers={"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"},
    )
    body = response.json()
    assert body["success"] == 1 and body["id"] is None
    assert body["warnings"] == ["not recorded: bot user agent"]
    assert "set-cookie" not in response.headers
    pixel = await harness.client.get("/mtracking.gif?page_url=p", headers={"User-Agent": "curl/8.5"})
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert await harness.db.contacts.count_documents({}) == 0
    assert await harness.db.hits.count_documents({}) == 0
    assert await harness.stream() == []


async def test_bot_filter_can_be_switched_off(make_harness):
    async with make_harness(filter_bots=False) as h:
        await h.client.get("/mtracking.gif?page_url=p", headers={"User-Agent": "curl/8.5"})
        assert await h.db.hits.count_documents({}) == 1


async def test_prefetch_and_prerender_are_not_recorded(harness):
    for headers in (
        {"Sec-Purpose": "prefetch"},
        {"Purpose": "prefetch"},
        {"Sec-Purpose": "prefetch;prerender"},
    ):
        await harness.client.get("/mtracking.gif?page_url=p", headers=headers)
    assert await harness.db.hits.count_documents({}) == 0


async def test_do_not_track_ips(make_harness):
    async with make_harness(ip="10.1.2.3", do_not_track_ips=("10.0.0.0/8", "2001:db8::/32")) as h:
        body = await h.event(page_url="p")
        assert body["id"] is None and "do-not-track" in body["warnings"][0]
        async with h.browser(ip="2001:db8::7") as v6:
            assert (await h.event(v6, page_url="p"))["id"] is None
        async with h.browser(ip="192.0.2.1") as other:
            assert (await h.event(other, page_url="p"))["id"]
        assert await h.db.hits.count_documents({}) == 1


async def test_dnt_and_gpc_are_stored_and_honoured_only_when_configured(make_harness):
    async with make_harness() as h:
        await h.client.get("/mtracking.gif?page_url=p", headers={"DNT": "1", "Sec-GPC": "1"})
        hit = await h.db.hits.find_one()
        assert hit["privacy"] == {"dnt": True, "gpc": True}
    async with make_harness(respect_dnt=True) as h:
        await h.client.get("/mtracking.gif?page_url=p", headers={"Sec-GPC": "1"})
        await h.client.get("/mtracking.gif?page_url=q", headers={"DNT": "1"})
        await h.client.get("/mtracking.gif?page_url=r")
        assert [x["url"] async for x in h.db.hits.find()] == ["r"]


async def test_ip_anonymisation(make_harness):
    async with make_harness(ip="203.0.113.77", anonymize_ip="truncate") as h:
        await h.pixel(page_url="p")
        assert (await h.db.hits.find_one())["ip"] == "203.0.113.0"
        assert (await h.db.contacts.find_one())["last_ip"] == "203.0.113.0"
    async with make_harness(ip="2001:db8:1:2::9", anonymize_ip="drop") as h:
        await h.pixel(page_url="p")
        assert (await h.db.hits.find_one())["ip"] is None


async def test_forwarded_for_only_from_trusted_proxies(make_harness):
    import ipaddress

    headers = {"X-Forwarded-For": "198.51.100.23, 10.0.0.9"}
    async with make_harness(ip="10.0.0.2", trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)) as h:
        await h.client.get("/mtracking.gif?page_url=p", headers=headers)
        assert (await h.db.hits.find_one())["ip"] == "198.51.100.23"
    async with make_harness(ip="10.0.0.2") as h:
        await h.client.get("/mtracking.gif?page_url=p", headers=headers)
        assert (await h.db.hits.find_one())["ip"] == "10.0.0.2"


async def test_a_client_cannot_spoof_its_ip_through_a_trusted_proxy(make_harness):
    """The proxy writes X-Forwarded-For (a second line when the client sent one); a Forwarded
    header the client sent itself passes through it and must not count."""
    import ipaddress

    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    async with make_harness(ip="10.0.0.2", trusted_proxies=proxies) as h:
        await h.raw(
            "GET",
            "/mtracking.gif",
            b"page_url=p",
            (
                (b"forwarded", b"for=6.6.6.6"),
                (b"x-forwarded-for", b"6.6.6.6"),
                (b"x-forwarded-for", b"198.51.100.23"),
            ),
            peer="10.0.0.2",
        )
        assert (await h.db.hits.find_one())["ip"] == "198.51.100.23"
    async with make_harness(ip="10.0.0.2", trusted_proxies=proxies, proxy_header="forwarded") as h:
        await h.raw(
            "GET",
            "/mtracking.gif",
            b"page_url=p",
            ((b"x-forwarded-for", b"6.6.6.6"), (b"forwarded", b"for=198.51.100.24")),
            peer="10.0.0.2",
        )
        assert (await h.db.hits.find_one())["ip"] == "198.51.100.24"


async def test_health(harness):
    response = await harness.client.get("/health")
    assert response.json()["status"] == "ok"


async def test_same_user_agent_string_is_parsed_once(harness):
    agents = harness.pipeline.agents
    agents.cache.clear()
    before = agents.parses
    for _ in range(3):
        await harness.pixel(page_url="p")
    assert agents.parses - before == 1
    assert list(agents.cache) == [CHROME] and agents.cache[CHROME].browser == "Chrome"
