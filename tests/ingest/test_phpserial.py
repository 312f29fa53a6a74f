import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.phpserial import PhpSerialError, loads
from tests.php import serialize

scalars = st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.text(max_size=30)
keys = st.integers(0, 1000) | st.text(max_size=10)
values = st.recursive(scalars, lambda inner: st.dictionaries(keys, inner, max_size=5), max_leaves=20)


@given(st.dictionaries(keys, values, max_size=8))
def test_round_trips_what_php_serializes(array):
    assert loads(serialize(array)) == array


def test_parses_the_user_document_snippet_shape():
    data = serialize({"page_url": "http://x.test/p?a=1", "page_title": "Ünïcode", "email": "a@b.c"})
    assert loads(data) == {"page_url": "http://x.test/p?a=1", "page_title": "Ünïcode", "email": "a@b.c"}


def test_string_length_is_in_bytes():
    assert loads('s:2:"é";'.encode()) == "é"


def test_floats():
    assert loads(b"d:1.5;") == 1.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'O:8:"stdClass":0:{}', "objects"),
        (b'a:1:{i:0;O:8:"stdClass":0:{}}', "objects"),
        (b'C:3:"Foo":0:{}', "objects"),
        (b"a:2:{i:0;i:1;i:1;r:2;}", "references"),
        (b'a:1:{i:0;s:50:"ab";}', "shorter"),
        (b'a:1:{i:0;s:5:"ab";}', "expected"),
        (b"a:1:{i:0;i:1;", "expected"),
        (b"i:1;garbage", "trailing"),
        (b"b:2;", "boolean"),
        (b"i:abc;", "integer"),
        (b"x:1;", "unsupported"),
        (b"", "end of input"),
        (b"a:-1:{}", "negative"),
        (b"a:1:{a:0:{}i:1;}", "keys"),
    ],
)
def test_refuses_anything_outside_the_safe_subset(data, message):
    with pytest.raises(PhpSerialError, match=message):
        loads(data)


def test_refuses_deep_nesting():
    deep = b"a:1:{i:0;" * 20 + b"N;" + b"}" * 20
    with pytest.raises(PhpSerialError, match="deeper"):
        loads(deep)
    assert loads(b"a:1:{i:0;" * 3 + b"N;" + b"}" * 3) == {0: {0: {0: None}}}


def test_refuses_huge_arrays_without_allocating_them():
    with pytest.raises(PhpSerialError, match="more than"):
        loads(b"a:99999999:{}")


@given(st.binary(max_size=200))
def test_never_raises_anything_but_its_own_error(data):
    try:
        loads(data)
    except PhpSerialError:
        pass
