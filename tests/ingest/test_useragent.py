import asyncio

import pytest

from ingest.useragent import MAX_USER_AGENT_LENGTH, UserAgentParser, matches_bot_list, parse_user_agent
from tests.conftest import CHROME, IPHONE


def test_browser_parsed():
    ua = parse_user_agent(CHROME)
    assert (ua.browser, ua.os, ua.device_type, ua.is_bot) == ("Chrome", "Windows", "desktop", False)


def test_phone_parsed():
    ua = parse_user_agent(IPHONE)
    assert (ua.os, ua.device_type, ua.brand, ua.model) == ("iOS", "smartphone", "Apple", "iPhone")


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "Wget/1.21",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2)",
    ],
)
def test_bots(agent):
    assert parse_user_agent(agent).is_bot


@pytest.mark.parametrize(
    "agent",
    [
        CHROME,
        IPHONE,
        "okhttp/4.12.0",  # Android apps calling the pixel
        "MyShop/3.1 CFNetwork/1410.0.3 Darwin/22.6.0",  # iOS apps
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0 Safari/537.36",
        "",
    ],
)
def test_not_bots(agent):
    assert not parse_user_agent(agent).is_bot


def test_substring_list_is_case_sensitive_as_in_mautic():
    assert matches_bot_list("xx Googlebot xx")
    assert not matches_bot_list("googlebot-lookalike-lowercase")


def test_overlong_agents_are_cut():
    assert len(parse_user_agent("Mozilla/5.0 " + "x" * 5000).raw) == 1024


CRAFTED = "Mozilla/5.0 (Linux; Android 10; " + "SM-" * 329


async def test_agents_are_cut_before_the_cache():
    parser = UserAgentParser()
    try:
        long = "Mozilla/5.0 Firefox/128.0 " + "x" * 5000
        first = await parser.parse(long + "a")
        second = await parser.parse(long + "b")  # differs only past the cut: the same entry
        assert first is second and len(first.raw) == MAX_USER_AGENT_LENGTH
        assert list(parser.cache) == [long[:MAX_USER_AGENT_LENGTH]] and parser.parses == 1
    finally:
        parser.close()


async def test_a_slow_parse_gives_the_unparsed_agent_and_is_cached_when_done():
    parser = UserAgentParser(timeout=0)
    try:
        agent = await parser.parse(CRAFTED + "1")
        assert agent.raw == (CRAFTED + "1")[:MAX_USER_AGENT_LENGTH] and agent.browser == ""
        await asyncio.wrap_future(parser.pending[(CRAFTED + "1")[:MAX_USER_AGENT_LENGTH]])
        await asyncio.sleep(0)  # the result is stored on the loop, one turn later
        assert (CRAFTED + "1")[:MAX_USER_AGENT_LENGTH] in parser.cache
    finally:
        parser.close()


async def test_past_the_pending_limit_agents_go_unparsed_at_once():
    parser = UserAgentParser(timeout=0, max_pending=2)
    try:
        for i in range(5):
            await parser.parse(CRAFTED + str(i))
        assert parser.parses == 2  # the other three were not queued
    finally:
        parser.close()


async def test_crafted_agents_do_not_hold_up_other_requests(harness):
    """40 crafted agents (each ~70 ms of DeviceDetector) arrive at once: a request for /mtc.js is
    answered while their parses are still running, and every pixel still gets its GIF."""
    agents = harness.pipeline.agents

    async def crafted(i):
        return await harness.client.get(
            "/mtracking.gif", params={"page_url": "p"}, headers={"User-Agent": CRAFTED + str(i)}
        )

    pixels = [asyncio.create_task(crafted(i)) for i in range(40)]
    while not agents.pending:  # noqa: ASYNC110 - the request tasks fill it within a few loop turns
        await asyncio.sleep(0)
    script = await harness.client.get("/mtc.js")
    assert script.status_code == 200
    assert agents.pending, "the trivial request waited for every crafted parse"
    for response in await asyncio.gather(*pixels):
        assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
