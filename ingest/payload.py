"""Turn the raw parameters of a tracking request into one flat `Params` mapping (pure, no I/O).

Sources, lowest precedence first (explicit parameters win, as in Mautic):
1. the query string of `page_url` (keys lower-cased, values decoded once);
2. the keys inside `d` (base64 of a PHP-serialized array or of a JSON object);
3. the request's query string;
4. the request body (form-encoded or JSON).
The parameters themselves: docs/tracking-protocol.md, "Parameters" and "Precedence".
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

import orjson

from contact_monitor.core.fields import TRACKING_PARAMETERS
from contact_monitor.core.identity import IDENTITY_HASH
from ingest import phpserial

ParamValue = str | list[str]
Params = dict[str, ParamValue]

MAX_KEYS = 200
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 8192
MAX_LIST_ITEMS = 100
# JSON bodies and JSON inside `d`: nesting is refused before parsing, so a deep document costs
# one scan and never a deep Python structure (or a RecursionError).
MAX_JSON_DEPTH = 8
# The bytes that matter for nesting: quotes, backslashes and brackets (one linear pass).
_JSON_TOKENS = re.compile(rb'["\\\[\]{}]')
# Parameters with a meaning of their own are accepted even past MAX_KEYS, so that junk parameters
# cannot push out the page URL; any other name may be a contact field alias.
RESERVED = TRACKING_PARAMETERS
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class PayloadError(ValueError):
    """An encoded payload (`d`, `ct`, a JSON body) could not be decoded."""


def normalized_key(key: str) -> str:
    """The name a parameter is kept under (`ParamsBuilder.add`): cleaned, trimmed, without `[]`."""
    key = clean_text(key).strip()
    return key[:-2] if key.endswith("[]") else key


@dataclass
class ParamsBuilder:
    """Collects parameters from several sources, applying limits and recording warnings."""

    params: Params = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message not in self.warnings and len(self.warnings) < 50:
            self.warnings.append(message)

    def add(self, key: str, value: ParamValue, *, override: bool = True) -> None:
        key = clean_text(key).strip()
        if not key:
            return
        if len(key) > MAX_KEY_LENGTH:
            self.warn(f"parameter names longer than {MAX_KEY_LENGTH} characters were ignored")
            return
        if key.endswith("[]"):
            key = key[:-2]
            existing = self.params.get(key)
            if isinstance(existing, list) and not override:
                return
            if isinstance(value, str):
                value = [*existing, value] if isinstance(existing, list) else [value]
        if not override and key in self.params:
            return
        if key not in self.params and len(self.params) >= MAX_KEYS and key not in RESERVED:
            self.warn(f"more than {MAX_KEYS} parameters: the rest were ignored")
            return
        if isinstance(value, list):
            if len(value) > MAX_LIST_ITEMS:
                self.warn(f"parameter {key!r} had more than {MAX_LIST_ITEMS} values: the rest were ignored")
            value = [self.limit(key, clean_text(v)) for v in value[:MAX_LIST_ITEMS]]
        else:
            value = self.limit(key, clean_text(value))
        self.params[key] = value

    def limit(self, key: str, value: str) -> str:
        if len(value) > MAX_VALUE_LENGTH:
            self.warn(f"parameter {key!r} was cut to {MAX_VALUE_LENGTH} characters")
            return value[:MAX_VALUE_LENGTH]
        return value

    def add_pairs(self, pairs: Iterable[tuple[str, str]], *, override: bool = True) -> None:
        if override:
            for key, value in pairs:
                self.add(key, value)
            return
        # Lower-precedence source: collect it whole first so `a[]=1&a[]=2` stays a list.
        lower = ParamsBuilder()
        lower.add_pairs(pairs)
        for key, collected in lower.params.items():
            self.add(key, collected, override=False)
        self.warnings.extend(w for w in lower.warnings if w not in self.warnings)

    def add_mapping(self, mapping: Mapping[str | int, object], source: str, *, override: bool) -> None:
        for key, value in mapping.items():
            flat = flatten_value(value)
            if flat is None:
                self.warn(f"{source}: nested value of {str(key)!r} was ignored")
                continue
            self.add(str(key), flat, override=override)


def clean_text(value: str) -> str:
    """Drop control characters (keeping tab and newlines); they have no place in tracking data.
    (A printable string has none: most values skip the substitution.)"""
    return value if value.isprintable() else _CONTROL.sub("", value)


def flatten_value(value: object) -> ParamValue | None:
    """A decoded JSON/PHP value as a parameter: scalars to text, a flat list to a list, else None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    items: Iterable[object]
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict) and all(isinstance(k, int) for k in value):
        items = value.values()
    else:
        return None
    flat: list[str] = []
    for item in items:
        inner = flatten_value(item)
        if not isinstance(inner, str):
            return None
        flat.append(inner)
    return flat


def parse_query(raw: bytes | str, builder: ParamsBuilder, *, limit: int, override: bool = True) -> None:
    """Parse `a=1&b=2`, cutting at the last complete pair within `limit` bytes."""
    data = raw.encode("latin-1", errors="replace") if isinstance(raw, str) else raw
    if len(data) > limit:
        builder.warn(f"request data larger than {limit} bytes: the excess was ignored")
        cut = data.rfind(b"&", 0, limit + 1)
        data = data[:cut] if cut > 0 else b""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        builder.warn("request data was not valid UTF-8: invalid bytes were replaced")
        text = data.decode("utf-8", errors="replace")
    pairs = parse_qsl(text, keep_blank_values=True, errors="replace", max_num_fields=None)
    builder.add_pairs(pairs, override=override)


def json_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in `data` (brackets inside strings skipped), counting no
    further than `limit + 1`: one pass over the quotes, backslashes and brackets, linear in the
    size of any input (valid JSON or not)."""
    depth = deepest = 0
    in_string = False
    skip_to = -1  # the byte after a backslash is escaped
    for token in _JSON_TOKENS.finditer(data):
        position = token.start()
        if position < skip_to:
            continue
        byte = data[position]
        if in_string:
            if byte == 0x5C:  # backslash
                skip_to = position + 2
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif byte in b"]}":
            depth -= 1
    return deepest


def loads_json(data: bytes) -> object:
    """Strict JSON (RFC 8259: no NaN, no lone surrogates, valid UTF-8) nested at most
    MAX_JSON_DEPTH levels; `ValueError` otherwise."""
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return orjson.loads(data)


def parse_json_body(raw: bytes, builder: ParamsBuilder) -> None:
    try:
        decoded = loads_json(raw)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        builder.warn(f"the JSON body could not be parsed and was ignored ({str(exc)[:80]})")
        return
    if not isinstance(decoded, dict):
        builder.warn("the JSON body must be an object and was ignored")
        return
    builder.add_mapping(decoded, "JSON body", override=True)


def decode_base64_payload(raw: str, *, url_decode: bool = True) -> dict[str | int, object]:
    """Decode `d`/`ct`: optional URL-encoding, base64 (standard or URL-safe), then a PHP array
    or a JSON object."""
    text = raw.strip()
    if url_decode and "%" in text:
        text = unquote(text)
    # Form decoding turns '+' into ' ' when a client forgot to URL-encode the base64.
    text = text.replace(" ", "+")
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError("not valid base64") from None
    if not decoded:
        return {}
    if decoded[:2] in (b"a:",):
        try:
            value = phpserial.loads(decoded)
        except phpserial.PhpSerialError as exc:
            raise PayloadError(f"not a safe PHP array ({exc})") from None
        assert isinstance(value, dict)
        return dict(value)
    if decoded.lstrip()[:1] == b"{":
        try:
            value_json = loads_json(decoded)
        except ValueError as exc:
            raise PayloadError(f"not valid JSON ({str(exc)[:80]})") from None
        if not isinstance(value_json, dict):
            raise PayloadError("not a PHP-serialized array nor a JSON object")
        return dict(value_json)
    raise PayloadError("not a PHP-serialized array nor a JSON object")


def merge_d(builder: ParamsBuilder) -> None:
    """Honour every key inside `d`, under the explicit parameters."""
    raw = builder.params.get("d")
    if not isinstance(raw, str) or not raw:
        return
    try:
        decoded = decode_base64_payload(raw)
    except PayloadError as exc:
        builder.warn(f"parameter 'd' was ignored: {exc}")
        return
    builder.add_mapping(decoded, "d", override=False)


# Read from the request itself only, never stored: CM_IDENTITY_SECRET's proofs (docs/identity.md).
PROOF_PARAMETERS = (IDENTITY_HASH, f"mauticform[{IDENTITY_HASH}]")  # in the order they are read


def merge_page_url_query(builder: ParamsBuilder) -> None:
    """Parameters in the tracked page's own query string count too (explicit ones win)."""
    page_url = builder.params.get("page_url") or builder.params.get("url")
    if not isinstance(page_url, str) or "?" not in page_url:
        return
    # Not urlsplit: it refuses some strings (`http://[x?a=1`) that a page URL parameter may hold.
    query = page_url.split("?", 1)[1].split("#", 1)[0]
    if not query:
        return
    # Never the proof of an identity (a shared link must not identify whoever opens it).
    lowered = [
        (key.lower(), value)
        for key, value in parse_qsl(query, keep_blank_values=True)
        if normalized_key(key).lower() not in PROOF_PARAMETERS
    ]
    builder.add_pairs(lowered, override=False)


def decode_clickthrough(raw: str) -> dict[str, object]:
    """`ct` as Mautic encodes it; only the keys used for attribution are kept."""
    decoded = decode_base64_payload(raw)
    result: dict[str, object] = {}
    channel = decoded.get("channel") or decoded.get("source")
    if isinstance(channel, dict) and channel:
        first_key = next(iter(channel))
        if isinstance(first_key, int):
            values = list(channel.values())
            if len(values) >= 2:
                result["source"], result["source_id"] = str(values[0]), str(values[1])
        else:
            result["source"], result["source_id"] = str(first_key), str(channel[first_key])
    for key in ("email", "stat", "lead"):
        value = decoded.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            result[key] = str(value)
    return result
