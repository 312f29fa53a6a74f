"""Hostile input on every public endpoint, through the real app: never a 5xx, the pixel is always
the 43-byte GIF, and no contact is written without its hit.

Hypothesis drives the ASGI app with random and adversarial parameters, bodies, headers and
cookies (numbers past int64 and float range, broken URLs, PHP and JSON payloads with bad signs and
deep nesting, control characters, lone surrogates). The example count is bounded so that CI
stays fast; `HYPOTHESIS_PROFILE=deep` runs many more by hand.
"""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contact_monitor.core import fields as field_ops
from contact_monitor.storage.forms import FormDefinition, FormField
from ingest.routes import GIF
from tests.conftest import CHROME

EXAMPLES = 400 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 60

ENDPOINTS = ("/mtracking.gif", "/mtc/event", "/mtc", "/form/submit")
RECORDING = ("/mtracking.gif", "/mtc/event")

NASTY_VALUES = [
    "inf",
    "-inf",
    "nan",
    "1e999",
    "-1e999",
    "99999999999999999999",
    "-99999999999999999999",
    "9223372036854775808",
    "²",
    "٣",
    "http://[x?a=1",
    "http://[",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "\x00",
    "a\x00b",
    "<script>alert(1)</script>",
    "x" * 5000,
    "%",
    "%ZZ",
    "-",
    ",,,-,",
    "",
    " ",
]
PHP_PAYLOADS = [
    b'a:1:{s:5:"email";i:--5;}',
    b'a:1:{s:+-1:"x";s:1:"y";}',
    b"a:-+1:{}",
    b'a:1:{s:7:"counter";i:99999999999999999999;}',
    b'a:1:{s:7:"counter";d:1e999;}',
    b"a:1:{i:0;" * 20 + b"N;" + b"}" * 20,
    b'O:8:"stdClass":0:{}',
]
JSON_PAYLOADS = [
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"counter": 99999999999999999999, "timezone_offset": 1e999}',
    b'{"page_url": "\\ud800"}',
    b'{"page_url": "http://[x?a=1", "email": "a@b.test"}',
    b'{"tags": ["a", ["b"]], "counter": -1}',
    b"{",
]
KEYS = [
    "page_url",
    "url",
    "page_title",
    "counter",
    "timezone_offset",
    "timezone",
    "resolution",
    "tags",
    "d",
    "ct",
    "mautic_device_id",
    "email",
    "birthday",
    "homepage",
    "formId",
    "mauticform[formId]",
    "mauticform[email]",
    "mauticform[birthday]",
    "mauticform[return]",
    "utm_source",
    "a.b",
    "$where",
    "x[]",
]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


values = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.sampled_from([b64(p) for p in PHP_PAYLOADS + JSON_PAYLOADS]),
    st.text(max_size=40),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
params = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), values, max_size=8)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, bytes, list[tuple[bytes, bytes]]]:
    path = draw(st.sampled_from(ENDPOINTS))
    method = draw(st.sampled_from(["GET", "POST", "POST", "HEAD", "PUT"]))
    query = urlencode(draw(params), quote_via=quote).encode()
    kind = draw(st.sampled_from(["none", "form", "json", "json-raw", "binary", "text"]))
    headers: list[tuple[bytes, bytes]] = []
    body = b""
    if kind == "form":
        body = urlencode(draw(params), quote_via=quote).encode()
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    elif kind == "json":
        body = json.dumps(draw(params)).encode()
        headers.append((b"content-type", b"application/json"))
    elif kind == "json-raw":
        body = draw(st.sampled_from(JSON_PAYLOADS))
        headers.append((b"content-type", b"application/json"))
    elif kind == "binary":
        body = draw(st.binary(max_size=200))
        headers.append((b"content-type", draw(st.sampled_from([b"multipart/form-data", b"text/plain", b""]))))
    elif kind == "text":
        body = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
        headers.append((b"content-type", b"text/plain"))
    header_values = st.binary(max_size=60).filter(lambda v: b"\r" not in v and b"\n" not in v)
    if draw(st.booleans()):
        cookie = draw(st.sampled_from([b"mtc_id=", b"mautic_device_id=", b"mtc_id=x; mautic_device_id="]))
        headers.append((b"cookie", cookie + draw(header_values)))
    if draw(st.booleans()):
        name = draw(st.sampled_from([b"user-agent", b"accept", b"x-forwarded-for", b"referer", b"dnt"]))
        headers.append((name, draw(header_values)))
    if draw(st.booleans()):
        headers.append((b"authorization", b"Bearer " + draw(header_values)))
    if draw(st.booleans()):
        headers.append((b"x-requested-with", b"XMLHttpRequest"))
    return method, path, query, body, headers


@pytest.fixture
async def fuzzed(harness):
    storage = harness.services.storage
    await field_ops.update_field(storage, "email", publicly_updatable=True, unique=True)
    await field_ops.create_field(storage, "birthday", type="datetime", publicly_updatable=True)
    await field_ops.create_field(storage, "homepage", type="url", publicly_updatable=True)
    await storage.forms.create(
        FormDefinition(
            "Signup",
            (FormField("email", "Email", "email", True), FormField("birthday", "Birthday", "birthday")),
        ),
        contact_fields={"email", "birthday"},
    )
    return harness


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
async def test_no_public_endpoint_fails_on_any_input(fuzzed, request):
    method, path, query, body, headers = request
    db = fuzzed.db
    contacts_before = await db.contacts.count_documents({})
    hits_before = await db.hits.count_documents({})
    if not any(name == b"user-agent" for name, _ in headers):
        headers = [(b"user-agent", CHROME.encode()), *headers]
    status, response_headers, content = await fuzzed.raw(method, path, query, tuple(headers), body)
    assert status < 500, (status, content[:300])
    if path == "/mtracking.gif":
        assert status == 200 and response_headers["content-type"] == "image/gif"
        assert content == (b"" if method == "HEAD" else GIF) and len(GIF) == 43
    if path in RECORDING:
        new_contacts = await db.contacts.count_documents({}) - contacts_before
        new_hits = await db.hits.count_documents({}) - hits_before
        assert new_contacts <= new_hits, "a contact was written without its hit"


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/mtracking.gif", b"timezone_offset=inf&page_url=p"),
        ("/mtracking.gif", b"timezone_offset=1e999&page_url=p"),
        ("/mtracking.gif", b"counter=99999999999999999999&page_url=p"),
        ("/mtracking.gif", b"page_url=http%3A%2F%2F%5Bx%3Fa%3D1"),
        ("/mtc/event", b"url=http%3A%2F%2F%5Bx%3Fa%3D1"),
        ("/mtc", b"timezone_offset=1e999&counter=99999999999999999999&page_url=http%3A%2F%2F%5Bx%3Fa%3D1"),
    ],
)
async def test_numbers_and_urls_that_once_failed_are_recorded_with_a_warning(harness, path, query):
    status, _, content = await harness.raw("GET", path, query)
    assert status == 200
    if path == "/mtracking.gif":
        assert content == GIF
        hit = await harness.db.hits.find_one({})
        assert hit is not None and hit["counter"] is None


async def test_a_counter_inside_d_or_a_json_body_past_int64_is_ignored(harness):
    d = b64(json.dumps({"counter": "99999999999999999999", "page_url": "p"}).encode())
    body = await harness.event(d=d)
    assert any("counter" in w for w in body["warnings"])
    response = await harness.client.post(
        "/mtc/event", json={"counter": 99999999999999999999, "page_url": "q"}
    )
    assert response.status_code == 200 and any("counter" in w for w in response.json()["warnings"])
    assert [h["counter"] for h in await harness.db.hits.find().to_list()] == [None, None]
    assert await harness.db.contacts.count_documents({}) == 1


@pytest.mark.parametrize("payload", [b'a:1:{s:1:"a";i:--5;}', b'a:1:{s:+-1:"a";i:1;}', b"a:-+1:{}"])
async def test_php_signs_are_refused_with_a_warning(harness, payload):
    body = await harness.event(page_url="p", d=b64(payload))
    assert any("parameter 'd' was ignored" in w for w in body["warnings"])


@pytest.mark.parametrize("depth", [9, 1000, 5000])
async def test_deep_json_is_refused_before_parsing(harness, depth):
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    body = await harness.event(page_url="p", d=b64(nested))
    assert any("nested deeper than 8 levels" in w for w in body["warnings"])
    response = await harness.client.post(
        "/mtc/event?page_url=q", content=nested, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert any("nested deeper than 8 levels" in w for w in response.json()["warnings"])
    status, _, content = await harness.raw(
        "POST", "/mtracking.gif", b"page_url=r", ((b"content-type", b"application/json"),), nested
    )
    assert status == 200 and content == GIF


async def test_json_nested_at_the_limit_is_read(harness):
    nested = {"page_url": "p", "deep": [[[[[[["x"]]]]]]]}  # the object and 7 lists: 8 levels
    response = await harness.client.post("/mtc/event", json=nested)
    assert response.status_code == 200
    assert not any("nested deeper" in w for w in response.json().get("warnings", []))


@pytest.mark.parametrize("form_id", ["²", "٣", "9" * 5000, "99999999999999999999", "-1", "1.0"])
async def test_form_ids_that_are_not_small_ascii_numbers_name_no_form(harness, form_id):
    response = await harness.client.post(
        "/form/submit", params={"formId": form_id, "ajax": "1"}, data={"email": "a@b.test"}
    )
    assert response.status_code == 200
    assert response.json() == {"success": 0, "errorMessage": "This form is no longer available."}


async def test_a_pixel_body_past_the_limit_keeps_the_parameters_that_fit(harness):
    limit = harness.settings.max_body_bytes
    body = b"page_url=fits&page_title=T&pad=" + b"y" * (limit + 1000)
    status, _, content = await harness.raw(
        "POST",
        "/mtracking.gif",
        b"",
        ((b"content-type", b"application/x-www-form-urlencoded"),),
        body,
    )
    assert status == 200 and content == GIF
    hit = await harness.db.hits.find_one({})
    assert hit["url"] == "fits" and hit["title"] == "T" and "pad" not in hit["query"]
