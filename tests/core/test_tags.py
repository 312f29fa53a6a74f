import pytest
from hypothesis import given
from hypothesis import strategies as st

from contact_monitor.core.tags import MAX_TAG_LENGTH, MAX_TAGS_PER_REQUEST, clean_tag, parse_tags, tag_key

# Mautic's XSS acceptance table (PublicControllerFunctionalTest::testContactTrackingTagsXss).
XSS = [
    ("<script>alert(1)</script>", "alert(1)"),
    ('<script src="http://example.com/evil.js"></script>', None),
    ("&#60;script&#62;alert(1)&#60;/script&#62;", "alert(1)"),
    ('<img src="x" onerror="alert(1)">', None),
    ('<a href="javascript:alert(1)">Click me</a>', "Click me"),
    ("<svg><script>alert(1)</script></svg>", "alert(1)"),
    ('<div style="background:url(javascript:alert(1))">', None),
    ('<img """><script>alert("XSS")</script>"<', 'alert("XSS")"'),
    ("<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">", None),
    ("<script>\\u0061lert(1)</script>", "\\u0061lert(1)"),
]


@pytest.mark.parametrize(("payload", "expected"), XSS)
def test_mautic_xss_table(payload, expected):
    changes = parse_tags(payload)
    assert changes.add == ((expected,) if expected else ())


def test_add_and_remove():
    changes = parse_tags("ProductA,-ProductB")
    assert changes.add == ("ProductA",)
    assert changes.remove == ("ProductB",)


def test_whitespace_after_the_dash_is_trimmed():
    assert parse_tags("- foo , bar ").remove == ("foo",)
    assert parse_tags("- foo , bar ").add == ("bar",)


def test_case_insensitive_duplicates_collapse_first_spelling_wins():
    assert parse_tags("Vip,VIP,vip").add == ("Vip",)
    assert tag_key("VIP") == tag_key("vip")


def test_last_word_wins_for_the_same_tag():
    changes = parse_tags("a,-A")
    assert changes.add == () and changes.remove == ("A",)


def test_list_values():
    assert parse_tags(["x", "-y"]).add == ("x",)


def test_tag_entity_cleaning():
    assert clean_tag(" trim whitespace ") == "trim whitespace"
    assert clean_tag("\ttrim tab\t") == "trim tab"
    assert clean_tag("<script>console.log(hello)</script>") == "console.log(hello)"
    assert clean_tag('hello" world') == 'hello" world'
    assert clean_tag("日本語タグ") == "日本語タグ"


def test_a_10kb_tag_is_refused_with_a_warning():
    changes = parse_tags("ok," + "x" * 10_000)
    assert changes.add == ("ok",)
    assert "longer than" in changes.warnings[0]


def test_1000_tags_are_cut_to_the_limit():
    changes = parse_tags(",".join(f"t{i}" for i in range(1000)))
    assert len(changes.add) == MAX_TAGS_PER_REQUEST
    assert any("more than 64" in w for w in changes.warnings)


@given(st.text(max_size=400))
def test_any_input_gives_bounded_clean_tags(text):
    changes = parse_tags(text)
    for name in changes.add + changes.remove:
        assert name and len(name) <= MAX_TAG_LENGTH
        assert "<" not in name or ">" not in name[name.index("<") :]
        assert "\x00" not in name
    assert len(changes.add) + len(changes.remove) <= MAX_TAGS_PER_REQUEST
