import pytest

from ingest.useragent import matches_bot_list, parse_user_agent
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
