import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.payload import (
    MAX_KEYS,
    MAX_VALUE_LENGTH,
    ParamsBuilder,
    PayloadError,
    decode_base64_payload,
    decode_clickthrough,
    merge_d,
    merge_page_url_query,
    parse_json_body,
    parse_query,
)
from tests.php import d_parameter, serialize


def params(query: str | bytes, *, limit: int = 65536) -> ParamsBuilder:
    builder = ParamsBuilder()
    parse_query(query, builder, limit=limit)
    merge_d(builder)
    merge_page_url_query(builder)
    return builder


def test_plain_query():
    assert params("page_url=cart_screen&email=a%40b.c").params == {
        "page_url": "cart_screen",
        "email": "a@b.c",
    }


def test_php_style_lists():
    assert params("tags[]=A&tags[]=B").params == {"tags": ["A", "B"]}


def test_d_from_the_php_snippet_is_honoured_fully():
    d = d_parameter({"page_url": "http://site.test/product", "page_title": "Cool", "email": "u@d.test"})
    result = params(f"d={d}").params
    assert result["page_url"] == "http://site.test/product"
    assert result["page_title"] == "Cool"
    assert result["email"] == "u@d.test"


def test_explicit_parameters_win_over_d_and_page_url():
    d = d_parameter({"page_title": "from d", "email": "d@x.test"})
    query = f"d={d}&page_title=explicit&page_url=http%3A%2F%2Fs.test%2F%3Femail%3Durl%40x.test%26utm_source%3Dnews"
    result = params(query).params
    assert result["page_title"] == "explicit"
    assert result["email"] == "d@x.test"  # d beats the page URL's query
    assert result["utm_source"] == "news"


def test_d_as_json_and_not_url_encoded():
    raw = base64.b64encode(json.dumps({"page_url": "screen_1", "tags": ["a", "b"]}).encode()).decode()
    assert params("d=" + raw.replace("+", "%2B")).params["tags"] == ["a", "b"]
    # A client that forgot to URL-encode: '+' arrives as ' '.
    assert decode_base64_payload(raw.replace("+", " ")) == {"page_url": "screen_1", "tags": ["a", "b"]}


def test_d_doubly_url_encoded():
    once = d_parameter({"page_url": "x?y=1&z=2" * 3})
    assert decode_base64_payload(once) == {"page_url": "x?y=1&z=2" * 3}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("%%%not-base64!!", "base64"),
        (base64.b64encode(b"just text").decode(), "PHP-serialized"),
        (base64.b64encode(b'O:8:"stdClass":0:{}').decode(), "PHP-serialized"),
        (base64.b64encode(b'a:1:{i:0;O:8:"stdClass":0:{}}').decode(), "objects"),
        (base64.b64encode(b"{broken json").decode(), "JSON"),
        (base64.b64encode(json.dumps({"a": [[[[[[[[[[1]]]]]]]]]]}).encode()).decode(), "deeper"),
    ],
)
def test_bad_d_is_reported_and_the_rest_kept(raw, why):
    with pytest.raises(PayloadError, match=why):
        decode_base64_payload(raw)
    builder = params(f"d={raw}&page_title=kept")
    assert builder.params["page_title"] == "kept"
    assert any("'d' was ignored" in w for w in builder.warnings)


def test_nested_values_inside_d_are_dropped_with_a_warning():
    d = d_parameter({"page_title": "ok", "nested": {"a": {"b": 1}}})
    builder = params(f"d={d}")
    assert builder.params["page_title"] == "ok"
    assert "nested" not in builder.params
    assert any("nested" in w for w in builder.warnings)


def test_page_url_keys_are_lower_cased_and_decoded_once():
    result = params("page_url=" + "https%3A%2F%2Fs.test%2F%3FUTM_Campaign%3Da%252Bb").params
    assert result["utm_campaign"] == "a+b"  # Mautic decodes twice and gets "a b"


def test_page_url_screen_names_have_no_query():
    assert params("page_url=cart_screen").params == {"page_url": "cart_screen"}


def test_oversized_query_keeps_the_complete_pairs_within_the_limit():
    query = "page_title=kept&" + "&".join(f"k{i}={'x' * 50}" for i in range(2000))
    builder = params(query, limit=4096)
    assert builder.params["page_title"] == "kept"
    assert len(builder.params) < 100
    assert any("larger than 4096" in w for w in builder.warnings)


def test_invalid_utf8_is_replaced_not_fatal():
    builder = params(b"page_title=caf%C3%A9&bad=%ff%fe&ok=1")
    assert builder.params["page_title"] == "café"
    assert builder.params["ok"] == "1"
    builder = params(b"page_title=\xff\xfe")
    assert "not valid UTF-8" in builder.warnings[0]


def test_limits_on_keys_and_values():
    builder = params(
        "&".join(f"k{i}=1" for i in range(MAX_KEYS + 50)) + "&long=" + "y" * (MAX_VALUE_LENGTH + 10)
    )
    assert len(builder.params) == MAX_KEYS
    builder = params("&".join(f"k{i}=1" for i in range(MAX_KEYS + 50)) + "&page_url=still")
    assert builder.params["page_url"] == "still"  # junk cannot push out the known parameters
    builder = params("long=" + "y" * (MAX_VALUE_LENGTH + 10))
    assert len(builder.params["long"]) == MAX_VALUE_LENGTH
    builder = params("x" * 100 + "=1")
    assert builder.params == {}


def test_control_characters_are_dropped():
    assert params("page_title=a%00b%07c%09d").params["page_title"] == "abc\td"


def test_json_body():
    builder = ParamsBuilder()
    parse_json_body(
        b'{"page_url": "s", "counter": 2, "adblock": false, "tags": ["a"], "x": {"y": 1}}', builder
    )
    assert builder.params == {"page_url": "s", "counter": "2", "adblock": "false", "tags": ["a"]}
    builder = ParamsBuilder()
    parse_json_body(b"[1,2]", builder)
    parse_json_body(b"\xff{", builder)
    assert builder.params == {} and len(builder.warnings) == 2


def test_clickthrough_as_mautic_builds_it():
    ct = base64.b64encode(
        serialize(
            {
                "source": ["email", "4"],
                "email": 4,
                "stat": "5f5dedc3b0dc0366144010",
                "lead": 2,
                "channel": {"email": 4},
            }
        )
    ).decode()
    assert decode_clickthrough(ct) == {
        "source": "email",
        "source_id": "4",
        "email": "4",
        "stat": "5f5dedc3b0dc0366144010",
        "lead": "2",
    }


@given(st.text(max_size=300))
def test_any_query_text_parses_without_error(text):
    builder = params(text)
    assert len(builder.params) <= MAX_KEYS


def _nesting(value, level=0):
    if isinstance(value, dict):
        return max((_nesting(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_nesting(v, level + 1) for v in value), default=level + 1)
    return level


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\\\ab\\n'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\\\a'), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(json_values)
def test_the_depth_scan_agrees_with_a_parser(value):
    """Brackets inside strings, escaped quotes and backslashes do not fool the scan."""
    import json

    from ingest.payload import MAX_JSON_DEPTH, json_depth

    encoded = json.dumps(value).encode()
    assert json_depth(encoded) == min(_nesting(value), MAX_JSON_DEPTH + 1)
