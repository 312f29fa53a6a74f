"""GET /mtc.js: the served script, its caching headers and the address written into it."""

import ipaddress


async def test_served_with_javascript_type_etag_and_cache_control(harness):
    response = await harness.client.get("/mtc.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.headers["cache-control"] == "public, max-age=86400"
    etag = response.headers["etag"]
    assert "var SERVER_HOST = 'track.example.com';" in response.text
    assert "var SERVER_SCHEME = 'https:';" in response.text
    assert "__CM_" not in response.text
    again = await harness.client.get("/mtc.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


async def test_posts_back_to_the_host_it_was_loaded_from(harness):
    other = await harness.client.get("http://cdn.example.net:8080/mtc.js")
    assert "var SERVER_HOST = 'cdn.example.net:8080';" in other.text
    assert "var SERVER_SCHEME = 'http:';" in other.text
    first = await harness.client.get("/mtc.js")
    assert other.headers["etag"] != first.headers["etag"]


async def test_a_host_header_that_is_not_a_host_is_refused(harness):
    status, _, body = await harness.raw("GET", "/mtc.js", headers=((b"host", b"evil.test';alert(1);'"),))
    assert status == 400 and b"alert" not in body


async def test_public_url_setting_wins(make_harness):
    async with make_harness(public_url="https://track.example.org") as h:
        text = (await h.client.get("http://internal:8000/mtc.js")).text
        assert "var SERVER_HOST = 'track.example.org';" in text and "var SERVER_SCHEME = 'https:';" in text


async def test_forwarded_host_and_proto_only_from_trusted_proxies(make_harness):
    headers = {"X-Forwarded-Host": "track.example.org", "X-Forwarded-Proto": "https"}
    async with make_harness(ip="10.0.0.5", trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)) as h:
        response = await h.client.get("http://internal:8000/mtc.js", headers=headers)
        assert "var SERVER_HOST = 'track.example.org';" in response.text and "'https:'" in response.text
        # A shared cache must not serve this answer to a request with other forwarded headers.
        assert response.headers["vary"] == "Host, X-Forwarded-Host, X-Forwarded-Proto"
        spoofed = {"X-Forwarded-Host": "evil.example, track.example.org", "X-Forwarded-Proto": "https"}
        text = (await h.client.get("http://internal:8000/mtc.js", headers=spoofed)).text
        assert "var SERVER_HOST = 'track.example.org';" in text  # the nearest proxy's value
    async with make_harness(ip="198.51.100.5") as h:
        response = await h.client.get("http://internal:8000/mtc.js", headers=headers)
        assert "var SERVER_HOST = 'internal:8000';" in response.text
        assert response.headers["vary"] == "Host"


async def test_a_public_url_makes_the_script_independent_of_request_headers(make_harness):
    async with make_harness(public_url="https://track.example.net") as h:
        response = await h.client.get("http://internal:8000/mtc.js", headers={"Host": "evil.example"})
        assert "var SERVER_HOST = 'track.example.net';" in response.text
        assert "vary" not in response.headers


async def test_loading_the_script_records_nothing(harness):
    await harness.client.get("/mtc.js")
    assert await harness.db.contacts.count_documents({}) == 0
