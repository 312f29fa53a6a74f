"""Every bad input of the ingest issue: a clear warning (or 413), never a 500, valid parts kept."""

import base64
import json

import pytest

from tests.php import d_parameter, serialize


async def test_oversized_query_on_the_pixel_keeps_what_fits(harness):
    junk = "&".join(f"k{i}={'x' * 60}" for i in range(2000))  # ~140 KB
    status, headers, body = await harness.raw(
        "GET", "/mtracking.gif", f"page_url=kept&page_title=T&{junk}".encode()
    )
    assert status == 200 and headers["content-type"] == "image/gif" and body[:6] == b"GIF89a"
    hit = await harness.db.hits.find_one()
    assert hit["url"] == "kept" and hit["title"] == "T"


async def test_oversized_body_on_the_event_endpoint_is_413_and_nothing_stored(harness):
    response = await harness.client.post(
        "/mtc/event",
        content=b"page_url=x&pad=" + b"y" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.json() == {
        "success": 0,
        "error": "request body larger than 65536 bytes",
        "code": "BAD_USER_INPUT",
    }
    assert await harness.db.hits.count_documents({}) == 0


async def test_oversized_streamed_body_without_length_is_413(harness):
    async def chunks():
        for _ in range(100):
            yield b"x" * 1024

    response = await harness.client.post("/mtc/event", content=chunks())
    assert response.status_code == 413


async def test_oversized_body_on_the_pixel_still_answers_the_gif(harness):
    response = await harness.client.post("/mtracking.gif?page_url=q", content=b"a=" + b"b" * 70_000)
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    assert (await harness.db.hits.find_one())["url"] == "q"


async def test_invalid_utf8(harness):
    response = await harness.client.post(
        "/mtc/event",
        content=b"page_url=ok&page_title=caf\xe9&x=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = response.json()
    assert response.status_code == 200 and body["success"] == 1
    assert any("UTF-8" in w for w in body["warnings"])
    hit = await harness.db.hits.find_one()
    assert hit["url"] == "ok" and hit["title"] == "caf\ufffd"


@pytest.mark.parametrize(
    "bad",
    [
        "!!!not base64!!!",
        base64.b64encode(b"plain text").decode(),
        base64.b64encode(serialize("a string, not an array")).decode(),
        base64.b64encode(b'O:8:"stdClass":1:{s:1:"a";i:1;}').decode(),
        base64.b64encode(b'a:1:{i:0;O:8:"stdClass":0:{}}').decode(),
        base64.b64encode(b"a:1:{i:0;" * 30 + b"N;" + b"}" * 30).decode(),
        base64.b64encode(json.dumps([1, 2]).encode()).decode(),
    ],
    ids=["not-base64", "not-serialized", "not-an-array", "object", "nested-object", "deep", "json-list"],
)
@pytest.mark.parametrize("name", ["d", "ct"])
async def test_bad_d_and_ct_are_ignored_and_the_hit_recorded(harness, bad, name):
    pixel = await harness.client.get("/mtracking.gif", params={name: bad, "page_url": "pixel"})
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    body = await harness.event(**{name: bad, "page_url": "event"})
    assert body["success"] == 1 and body["id"]
    assert any(f"'{name}' was ignored" in w for w in body["warnings"])
    assert sorted([h["url"] async for h in harness.db.hits.find()]) == ["event", "pixel"]


async def test_non_numeric_timezone_offset(harness):
    body = await harness.event(page_url="p", timezone_offset="UTC+2")
    assert any("timezone_offset" in w for w in body["warnings"])
    hit = await harness.db.hits.find_one()
    assert hit["fingerprint"]["timezone_offset"] is None and hit["url"] == "p"


async def test_a_10kb_tag(harness):
    body = await harness.event(page_url="p", tags="good," + "x" * 10_000)
    assert any("longer than 100" in w for w in body["warnings"])
    assert (await harness.db.contacts.find_one())["tags"] == ["good"]


async def test_1000_tags(harness):
    body = await harness.event(page_url="p", tags=",".join(f"t{i}" for i in range(1000)))
    assert any("more than 64 tags" in w for w in body["warnings"])
    assert len((await harness.db.contacts.find_one())["tags"]) == 64
    assert await harness.db.tags.count_documents({}) == 64


async def test_invalid_email_is_dropped_the_rest_kept(harness):
    await harness.field("email")
    await harness.field("firstname")
    body = await harness.event(page_url="p", email="ann(at)example", firstname="Ann")
    assert any("'email' was ignored: not a valid email address" in w for w in body["warnings"])
    contact = await harness.db.contacts.find_one()
    assert contact["fields"]["firstname"] == "Ann" and "email" not in contact["fields"]
    assert contact["anonymous"] is False  # a first name identifies, as in Mautic


async def test_empty_values_never_overwrite(harness):
    await harness.field("firstname")
    await harness.event(page_url="p", firstname="Ann")
    await harness.event(page_url="p", firstname="")
    assert (await harness.db.contacts.find_one())["fields"]["firstname"] == "Ann"


async def test_unknown_field_is_kept_in_the_query_only(harness):
    body = await harness.event(page_url="p", favourite_colour="blue")
    assert body["success"] == 1
    assert "favourite_colour" not in (await harness.db.contacts.find_one())["fields"]
    assert (await harness.db.hits.find_one())["query"]["favourite_colour"] == "blue"


async def test_forged_device_id_cookie(harness):
    harness.client.cookies.set("mautic_device_id", "z" * 23, domain="track.example.com")
    body = await harness.event(page_url="p")
    assert body["id"] and body["device_id"] != "z" * 23


async def test_garbage_cookies(harness):
    cookie = b"mtc_id=" + b"x" * 500 + b"; mautic_device_id=" + "\u00e9".encode() * 23 + b"; ;=;\xff"
    status, _, body = await harness.raw("GET", "/mtc/event", b"page_url=p", ((b"cookie", cookie),))
    assert status == 200 and json.loads(body)["id"]


async def test_d_with_a_json_object_and_array_values(harness):
    await harness.field("email")
    raw = base64.b64encode(
        json.dumps({"page_url": "json_screen", "email": "j@x.test", "tags": ["a"]}).encode()
    )
    await harness.pixel(d=raw.decode())
    assert (await harness.db.hits.find_one())["url"] == "json_screen"
    contact = await harness.db.contacts.find_one()
    assert contact["fields"]["email"] == "j@x.test" and contact["tags"] == ["a"]


async def test_unknown_content_type_body_is_ignored_with_a_warning(harness):
    response = await harness.client.post(
        "/mtc/event?page_url=p", content=b"\x00\x01", headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200
    assert any("octet-stream" in w for w in response.json()["warnings"])


async def test_d_php_snippet_with_more_keys_than_a_query_allows(harness):
    d = d_parameter({f"k{i}": "v" for i in range(300)} | {"page_url": "many"})
    response = await harness.client.get(f"/mtracking.gif?d={d}")
    assert response.status_code == 200
    assert (await harness.db.hits.find_one())["url"] == "many"
