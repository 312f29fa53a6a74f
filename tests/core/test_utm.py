import pytest
from hypothesis import given
from hypothesis import strategies as st

from contact_monitor.core.utm import extract_utm, utm_icon, utm_title


def test_only_non_empty_standard_keys():
    assert extract_utm({"utm_source": "", "utm_medium": " ", "xutm_a": "1", "utm_foo": "z"}) == {}
    assert extract_utm({"utm_source": "news", "utm_campaign": ["a", "b"]}) == {
        "utm_source": "news",
        "utm_campaign": "b",
    }


def test_values_are_limited():
    assert len(extract_utm({"utm_content": "x" * 500})["utm_content"]) == 191


def test_title_is_the_campaign():
    assert utm_title({"utm_campaign": "Spring"}) == "UTM Campaign: Spring"
    assert utm_title({"utm_source": "x"}) == "UTM tags recorded"


# The user document's utm_medium -> Font Awesome table.
@pytest.mark.parametrize(
    ("medium", "source", "icon"),
    [
        ("social", "", "fa-share-alt"),
        ("socialmedia", "Twitter", "fa-twitter"),
        ("email", "", "fa-envelope-o"),
        ("newsletter", "x", "fa-envelope-o"),
        ("banner", "", "fa-bullseye"),
        ("ad", "", "fa-bullseye"),
        ("cpc", "", "fa-money"),
        ("location", "", "fa-map-marker"),
        ("device", "", "fa-tablet"),
        ("device", "Mobile", "fa-mobile"),
        ("Email", "", "fa-envelope-o"),
        ("other", "", "fa-hashtag"),
    ],
)
def test_icon_table(medium, source, icon):
    utm = {"utm_medium": medium}
    if source:
        utm["utm_source"] = source
    assert utm_icon(utm) == icon


@given(st.text(max_size=40))
def test_icon_from_any_source_is_a_safe_class(source):
    icon = utm_icon({"utm_medium": "social", "utm_source": source})
    assert icon.startswith("fa-")
    assert all(ch.isalnum() or ch in "-_" for ch in icon)
