"""A strict parser for the subset of PHP's `serialize()` format that tracking payloads use.

Mautic's `d` and `ct` parameters are base64 of a PHP-serialized array. Calling a general
unserializer on untrusted input is how PHP object-injection bugs happen, so this parser knows
only arrays, strings, integers, floats, booleans and null. Objects (`O:`, `C:`), references
(`r:`, `R:`) and anything else are refused, as are nesting deeper than `max_depth` and arrays
larger than `max_items`.
"""

from __future__ import annotations

import re

# What PHP's serialize() writes for an integer: an optional minus and at most 19 digits.
_INTEGER = re.compile(rb"-?[0-9]{1,19}")

PhpScalar = str | int | float | bool | None
PhpValue = PhpScalar | dict[str | int, "PhpValue"]


class PhpSerialError(ValueError):
    """The input is not a safe PHP-serialized value."""


class _Parser:
    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.max_items = max_items
        self.items = 0

    def fail(self, message: str) -> PhpSerialError:
        return PhpSerialError(f"{message} at byte {self.pos}")

    def expect(self, token: bytes) -> None:
        if not self.data.startswith(token, self.pos):
            raise self.fail(f"expected {token.decode()!r}")
        self.pos += len(token)

    def read_until(self, stop: bytes) -> bytes:
        end = self.data.find(stop, self.pos)
        if end < 0:
            raise self.fail(f"missing {stop.decode()!r}")
        chunk = self.data[self.pos : end]
        self.pos = end + len(stop)
        return chunk

    def read_int(self, stop: bytes) -> int:
        raw = self.read_until(stop)
        if not _INTEGER.fullmatch(raw):
            raise self.fail("invalid integer")
        return int(raw)

    def value(self, depth: int) -> PhpValue:
        if self.pos + 2 > len(self.data):
            raise self.fail("unexpected end of input")
        tag = self.data[self.pos : self.pos + 2]
        if tag == b"N;":
            self.pos += 2
            return None
        self.pos += 2
        if tag == b"b:":
            raw = self.read_until(b";")
            if raw not in (b"0", b"1"):
                raise self.fail("invalid boolean")
            return raw == b"1"
        if tag == b"i:":
            return self.read_int(b";")
        if tag == b"d:":
            raw = self.read_until(b";")
            try:
                return float(raw.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise self.fail("invalid float") from None
        if tag == b"s:":
            length = self.read_int(b":")
            if length < 0:
                raise self.fail("negative string length")
            self.expect(b'"')
            raw = self.data[self.pos : self.pos + length]
            if len(raw) != length:
                raise self.fail("string shorter than its declared length")
            self.pos += length
            self.expect(b'";')
            return raw.decode("utf-8", errors="replace")
        if tag == b"a:":
            return self.array(depth)
        if tag in (b"O:", b"C:", b"o:"):
            raise self.fail("PHP objects are not accepted")
        if tag in (b"r:", b"R:"):
            raise self.fail("PHP references are not accepted")
        raise self.fail(f"unsupported type {tag[:1].decode(errors='replace')!r}")

    def array(self, depth: int) -> dict[str | int, PhpValue]:
        if depth >= self.max_depth:
            raise self.fail(f"arrays nested deeper than {self.max_depth} levels")
        count = self.read_int(b":")
        if count < 0:
            raise self.fail("negative array size")
        self.items += count
        if self.items > self.max_items:
            raise self.fail(f"more than {self.max_items} array items")
        self.expect(b"{")
        result: dict[str | int, PhpValue] = {}
        for _ in range(count):
            key = self.value(depth + 1)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise self.fail("array keys must be strings or integers")
            result[key] = self.value(depth + 1)
        self.expect(b"}")
        return result


def loads(data: bytes, *, max_depth: int = 8, max_items: int = 1000) -> PhpValue:
    """Parse one PHP-serialized value; raise `PhpSerialError` on anything outside the safe subset."""
    parser = _Parser(data, max_depth, max_items)
    result = parser.value(0)
    if parser.pos != len(data):
        raise parser.fail("trailing data after the value")
    return result
