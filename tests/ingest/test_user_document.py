"""The pixel snippets of the user document (README, "Try it with curl" and "Endpoints"), sent as the browser / PHP / app would send them."""

from urllib.parse import quote

from tests.conftest import IPHONE
from tests.php import d_parameter


def encode_uri_component(text: str) -> str:
    return quote(text, safe="-_.!~*'()")


async def test_html_img_snippet(harness):
    await harness.field("email")
    # Verbatim query of the document's <img> example.
    query = (
        "page_url=http%3a%2f%2fyourdomain.com%2fyour-product-page&page_title=Some%20Cool%20Product"
        "&email=user%40theirdomain.com&tags=ProductA,-ProductB"
    )
    response = await harness.client.get(f"/mtracking.gif?{query}")
    assert response.headers["content-type"] == "image/gif"
    hit = await harness.db.hits.find_one()
    contact = await harness.db.contacts.find_one()
    assert hit["url"] == "http://yourdomain.com/your-product-page"
    assert hit["title"] == "Some Cool Product"
    assert contact["fields"]["email"] == "user@theirdomain.com"
    assert contact["tags"] == ["ProductA"]


async def test_tags_remove_with_a_dash(harness):
    await harness.pixel(page_url="p", tags="ProductA,ProductB")
    await harness.pixel(page_url="p", tags="ProductA,-ProductB")
    assert (await harness.db.contacts.find_one())["tags"] == ["ProductA"]


async def test_php_snippet(harness):
    """`urlencode(base64_encode(serialize(array(...))))`, built byte for byte as PHP does."""
    await harness.field("email")
    d = d_parameter(
        {
            "page_url": "http://www.example.com/products/index.php?id=4&utm_campaign=Launch",
            "page_title": "Products — Ünïcode & more",
            "email": "logged.in@example.com",
        }
    )
    assert "%2B" in d or "%2F" in d or "%3D" in d  # PHP's urlencode really encodes base64 characters
    response = await harness.client.get(f"/mtracking.gif?d={d}")
    assert response.status_code == 200
    hit = await harness.db.hits.find_one()
    assert hit["url"] == "http://www.example.com/products/index.php?id=4&utm_campaign=Launch"
    assert hit["title"] == "Products — Ünïcode & more"
    assert hit["utm"] == {"utm_campaign": "Launch"}
    assert (await harness.db.contacts.find_one())["fields"]["email"] == "logged.in@example.com"
    assert hit["query"]["d"]  # the raw d stays in the stored query, as in Mautic


async def test_javascript_img_snippet(harness):
    href, title = "https://shop.test/cart?item=7&utm_medium=cpc", "Cart \u2013 1 item"
    src = f"/mtracking.gif?page_url={encode_uri_component(href)}&page_title={encode_uri_component(title)}"
    await harness.client.get(src)
    hit = await harness.db.hits.find_one()
    assert (hit["url"], hit["title"]) == (href, title)
    assert hit["utm"] == {"utm_medium": "cpc"}


async def test_custom_parameters_of_mt_send_pageview(harness):
    """mt('send', 'pageview', {email: 'my@email.com', firstname: 'John'}) posts these to /mtc/event."""
    await harness.field("email")
    await harness.field("firstname")
    body = await harness.event(
        page_url="https://site.test/",
        page_title="Site",
        email="my@email.com",
        firstname="John",
        page_language="en-US",
        page_referrer="google.com",
        counter="0",
        timezone_offset="0",
        resolution="1280x720",
        platform="Linux",
        do_not_track="false",
    )
    contact = await harness.db.contacts.find_one({"_id": body["id"]})
    assert contact["fields"]["email"] == "my@email.com" and contact["fields"]["firstname"] == "John"


async def test_mobile_monitoring_screen_views_identified_by_email(harness):
    """`mautic.track("cart_screen", "myemail@somewhere.com")` with a reused cookie jar."""
    await harness.field("email")
    async with harness.browser(user_agent=IPHONE) as app:
        await harness.pixel(app, page_url="main_screen", email="myemail@somewhere.com")
        await harness.pixel(app, page_url="cart_screen", email="myemail@somewhere.com")
    async with harness.browser(user_agent=IPHONE) as reinstalled:  # cookies lost: email still identifies
        await harness.pixel(reinstalled, page_url="cart_screen", email="myemail@somewhere.com")
    assert await harness.db.contacts.count_documents({}) == 1
    assert [h["url"] async for h in harness.db.hits.find().sort("occurred_at", 1)] == [
        "main_screen",
        "cart_screen",
        "cart_screen",
    ]
