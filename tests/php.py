"""PHP's serialize(), urlencode() and base64_encode(), byte for byte, to build `d` as the user
document's PHP snippet does."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote_plus


def serialize(value: Any) -> bytes:
    if value is None:
        return b"N;"
    if isinstance(value, bool):
        return b"b:1;" if value else b"b:0;"
    if isinstance(value, int):
        return f"i:{value};".encode()
    if isinstance(value, float):
        return f"d:{value!r};".encode()
    if isinstance(value, str):
        raw = value.encode()
        return f's:{len(raw)}:"'.encode() + raw + b'";'
    if isinstance(value, list):
        value = dict(enumerate(value))
    if isinstance(value, dict):
        body = b"".join(serialize(k) + serialize(v) for k, v in value.items())
        return f"a:{len(value)}:{{".encode() + body + b"}"
    raise TypeError(type(value))


def urlencode(text: str) -> str:
    """PHP urlencode: like quote_plus, which encodes '+', '/' and '=' as PHP does."""
    return quote_plus(text, safe="")


def d_parameter(array: dict[str, Any]) -> str:
    """urlencode(base64_encode(serialize(array))) - the value the snippet puts after `?d=`."""
    return urlencode(base64.b64encode(serialize(array)).decode())
