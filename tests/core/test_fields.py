import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contact_monitor.core.fields import (
    CORE_FIELDS,
    FieldValueError,
    submitted_fields,
    timezone_from_offset,
    validate_value,
)
from contact_monitor.storage.contacts import unique_key
from contact_monitor.storage.fields import FieldDefinition


def field(kind, **kw):
    return FieldDefinition("f", "F", kind, **kw)


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [
        ("email", " Ann.Lee+x@Example.COM ", "Ann.Lee+x@example.com"),
        ("number", "42", 42.0),
        ("number", "3,5", 3.5),
        ("boolean", "yes", True),
        ("boolean", "OFF", False),
        ("date", "2024-02-29", "2024-02-29"),
        ("datetime", "2024-02-29T10:00:00+02:00", "2024-02-29T08:00:00"),
        ("url", "https://ex.test/a", "https://ex.test/a"),
        ("tel", "+49 (30) 123-456", "+49 (30) 123-456"),
        ("timezone", "Europe/Paris", "Europe/Paris"),
        ("locale", "en-US", "en_US"),
        ("text", "<b>John</b>", "John"),
        ("text", ["a", " b "], "a|b"),
        ("text", "   ", None),
        ("email", "", None),
    ],
)
def test_valid_values(kind, raw, stored):
    assert validate_value(field(kind), raw) == stored


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("email", "not-an-email"),
        ("email", "a@b"),
        ("email", "x" * 250 + "@example.com"),
        ("number", "ten"),
        ("number", "nan"),
        ("boolean", "maybe"),
        ("date", "29/02/2024"),
        ("datetime", "yesterday"),
        ("datetime", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
        ("number", "1e999"),
        ("url", "javascript:alert(1)"),
        ("url", "http://["),
        ("url", "http://[x?a=1"),
        ("tel", "call me"),
        ("timezone", "Mars/Olympus"),
        ("locale", "english please"),
        ("text", "<script></script>"),
    ],
)
def test_invalid_values(kind, raw):
    with pytest.raises(FieldValueError):
        validate_value(field(kind), raw)


def test_text_length_limit():
    with pytest.raises(FieldValueError, match="longer than 191"):
        validate_value(field("text"), "x" * 192)


def test_unique_keys_are_case_insensitive():
    assert unique_key("email", "Ann@Example.com") == unique_key("email", "ann@example.com")


def test_timezone_from_offset():
    assert timezone_from_offset(-120) == "Etc/GMT-2"
    assert timezone_from_offset(300) == "Etc/GMT+5"
    assert timezone_from_offset(0) == "Etc/UTC"
    assert timezone_from_offset(-330) is None


def test_nothing_is_publicly_updatable_after_install():
    assert not any(f.publicly_updatable for f in CORE_FIELDS)
    assert [f.alias for f in CORE_FIELDS if f.unique] == ["email"]


def test_submitted_fields_only_public_ones_case_insensitive_names():
    registry = {f.alias: f for f in CORE_FIELDS}
    registry["email"] = FieldDefinition("email", "Email", "email", publicly_updatable=True, unique=True)
    registry["firstname"] = FieldDefinition("firstname", "First", publicly_updatable=True)
    values, warnings = submitted_fields(
        {"Email": "a@b.test", "firstname": "", "lastname": "Hidden", "unknown": "x"}, registry
    )
    assert values == {"email": "a@b.test"}
    assert warnings == []
    values, warnings = submitted_fields({"email": "bad", "Email": "ok@b.test"}, registry)
    assert values == {} and "not a valid email" in warnings[0]  # the exact lower-case name wins


@given(st.text(max_size=300))
def test_text_values_never_keep_markup_or_exceed_the_limit(raw):
    try:
        value = validate_value(field("text"), raw)
    except FieldValueError:
        return
    assert value is None or (
        isinstance(value, str) and len(value) <= 191 and not re.search(r"<[^>]*>", value)
    )


async def test_a_field_change_reaches_every_server_process_at_once(make_harness):
    """Two apps on one database and Redis, caching the registry for an hour: a change made
    through one (the API) or by the CLI is seen by the other at its next request."""
    from tests.servers import cli, server_env

    async with make_harness(field_cache_seconds=3600) as a, make_harness(field_cache_seconds=3600) as b:
        await b.pixel(page_url="p", firstname="Ann")  # not publicly updatable: ignored
        b.services.fields.invalidated.clear()
        key = await a.services.storage.api_keys.create("admin", "admin")
        mutation = 'mutation { updateField(alias: "firstname", publiclyUpdatable: true) { alias } }'
        response = await a.client.post(
            "/graphql", json={"query": mutation}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200 and not response.json().get("errors")
        await b.services.fields.invalidated.wait()
        body = await b.event(page_url="q", firstname="Ann")
        contact = await b.db.contacts.find_one({"_id": body["id"]})
        assert contact["fields"]["firstname"] == "Ann"

        b.services.fields.invalidated.clear()
        env = server_env(
            CM_MONGODB_URI=a.settings.mongodb_uri,
            CM_MONGODB_DB=a.settings.mongodb_db,
            CM_REDIS_URL=a.settings.redis_url,
            CM_REDIS_PREFIX=a.settings.redis_prefix,
        )
        cli(env, "fields", "update", "lastname", "--publicly-updatable")
        await b.services.fields.invalidated.wait()
        assert (await b.services.fields.get())["lastname"].publicly_updatable
