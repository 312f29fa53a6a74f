"""CORS headers for exact and wildcard origins, preflights everywhere, cookie attributes."""

import pytest

PATHS = ["/mtc/event", "/mtracking.gif", "/mtc"]


@pytest.mark.parametrize(
    "origin", ["https://shop.example.com", "https://blog.example.org", "https://A.EXAMPLE.ORG"]
)
async def test_allowed_origins_are_echoed_with_credentials(harness, origin):
    response = await harness.client.post(
        "/mtc/event", data={"page_url": "p"}, headers={"Origin": origin, "X-Requested-With": "XMLHttpRequest"}
    )
    assert response.headers["access-control-allow-origin"] == origin
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers["vary"]


@pytest.mark.parametrize(
    "origin", ["https://evil.test", "https://shop.example.com.evil.test", "http://shop.example.com", "null"]
)
async def test_other_origins_get_no_cors_headers_but_the_hit_is_recorded(harness, origin):
    response = await harness.client.post("/mtc/event", data={"page_url": "p"}, headers={"Origin": origin})
    assert response.status_code == 200
    assert not any(name.startswith("access-control-") for name in response.headers)
    assert await harness.db.hits.count_documents({}) == 1


@pytest.mark.parametrize("path", PATHS)
async def test_preflight_for_an_allowed_origin(harness, path):
    response = await harness.client.options(
        path,
        headers={
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-requested-with",
        },
    )
    assert response.status_code == 204 and response.content == b""
    headers = response.headers
    assert headers["access-control-allow-origin"] == "https://shop.example.com"
    assert headers["access-control-allow-methods"] == "PUT, GET, POST, DELETE, OPTIONS"
    assert headers["access-control-allow-headers"] == "Origin, X-Requested-With, Content-Type, Authorization"
    assert headers["access-control-max-age"] == "36000"
    assert await harness.db.contacts.count_documents({}) == 0  # a preflight records nothing


@pytest.mark.parametrize("path", PATHS)
async def test_preflight_for_another_origin(harness, path):
    response = await harness.client.options(
        path, headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert "access-control-allow-origin" not in response.headers


async def test_wildcard_star_allows_every_origin(make_harness):
    async with make_harness(cors_origins=("*",)) as h:
        response = await h.client.get("/mtc", headers={"Origin": "https://anything.test"})
        assert response.headers["access-control-allow-origin"] == "https://anything.test"


async def test_no_origins_configured_means_no_cors(make_harness):
    async with make_harness(cors_origins=()) as h:
        response = await h.client.get("/mtc", headers={"Origin": "https://shop.example.com"})
        assert "access-control-allow-origin" not in response.headers


async def test_insecure_cookies_for_plain_http_development(make_harness):
    async with make_harness(cookie_secure=False, cookie_domain="example.com") as h:
        response = await h.client.get("/mtracking.gif?page_url=p")
        for cookie in response.headers.get_list("set-cookie"):
            assert "Secure" not in cookie
            assert "SameSite=lax" in cookie
            assert "Domain=example.com" in cookie


async def test_cookie_values_are_the_ids_of_the_json(harness):
    response = await harness.client.post("/mtc/event", data={"page_url": "p"})
    body = response.json()
    assert response.cookies["mtc_id"] == body["id"]
    assert response.cookies["mautic_device_id"] == body["device_id"]
    hit = await harness.db.hits.find_one()
    assert response.cookies["mautic_referer_id"] == str(hit["_id"])


async def test_graphql_cors_follows_the_dashboard_origins(make_harness):
    async with make_harness(dashboard_origins=("https://dash.example.com",)) as h:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        dash = await h.client.options("/graphql", headers={"Origin": "https://dash.example.com", **preflight})
        assert dash.headers["access-control-allow-origin"] == "https://dash.example.com"
        assert "Authorization" in dash.headers["access-control-allow-headers"]
        site = await h.client.options("/graphql", headers={"Origin": "https://shop.example.com", **preflight})
        assert "access-control-allow-origin" not in site.headers  # a tracked site is not a dashboard
        pixel = await h.client.options(
            "/mtc/event", headers={"Origin": "https://dash.example.com", **preflight}
        )
        assert "access-control-allow-origin" not in pixel.headers


def test_tracking_cookies_are_written_as_starlette_writes_them():
    """The pre-formatted Set-Cookie headers (ingest/cookies.py) equal Starlette's own, for every
    setting that changes them; a value that would need quoting takes Starlette's path."""
    from dataclasses import replace

    from starlette.responses import Response

    from contact_monitor.settings import Settings
    from ingest.cookies import _set_with_starlette, set_tracking_cookies

    for secure in (True, False):
        for domain in (None, ".example.com"):
            settings = replace(Settings(), cookie_secure=secure, cookie_domain=domain)
            for contact_id, device_id, hit_id in (
                ("5c0e9d6f0a1b2c3d4e5f6a7b", "k3v9q2x7m1p4z8a6b0c5d2e", None),
                ("5c0e9d6f0a1b2c3d4e5f6a7b", "k3v9q2x7m1p4z8a6b0c5d2e", "6a1b2c3d4e5f6a7b8c9d0e1f"),
                ("not plain; value", "dévice", "x y"),
            ):
                fast = Response()
                set_tracking_cookies(
                    fast, settings, contact_id=contact_id, device_id=device_id, hit_id=hit_id
                )
                slow = Response()
                for name, value, max_age in (
                    ("mtc_id", contact_id, None),
                    ("mautic_device_id", device_id, 365 * 24 * 3600),
                    ("mautic_referer_id", hit_id, 30 * 60),
                ):
                    if value is not None:
                        _set_with_starlette(slow, name, value, max_age, domain, secure)
                assert fast.raw_headers == slow.raw_headers
