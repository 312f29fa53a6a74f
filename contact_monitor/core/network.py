"""Client IP: which address a request came from, whether it may be tracked, what is stored (pure).

The forwarded chain is believed only when the peer is a configured trusted proxy (Mautic trusts
it from anyone, which makes the IP spoofable), and only from the one header the proxies are
configured to write (`CM_PROXY_HEADER`: `X-Forwarded-For` by default, or `Forwarded`). As
uvicorn's ProxyHeadersMiddleware does: every line of the header counts (HAProxy adds a second
line), read right to left, and the client is the first hop that is not a trusted proxy.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

from contact_monitor.settings import AnonymizeMode, IPNetwork, ProxyHeader

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _split(text: str, separator: str) -> list[str]:
    """`text` split on `separator` outside double-quoted strings (RFC 7239 quoting)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def forwarded_for(line: str) -> list[str]:
    """The `for` values of a `Forwarded` line, one per element, in order. Only a parameter named
    exactly `for` counts: `host=for=6.6.6.6` or a quoted `"x;for=..."` is not a hop."""
    hops = []
    for element in _split(line, ","):
        for pair in _split(element, ";"):
            name, _, value = pair.strip().partition("=")
            if name.strip().lower() == "for" and value:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1].replace('\\"', '"')
                hops.append(value)
    return hops


# The longest text `parse_ip` remembers: an address with brackets, port and zone fits; a
# longer header value (a visitor's own `X-Forwarded-For`) is parsed each time, never kept.
REMEMBERED_IP_TEXT = 100


def parse_ip(value: str | None) -> IPAddress | None:
    """The address in a peer or header value (None: not one). Remembered, since peers and proxy
    hops repeat (the addresses are immutable): the last 4,096 texts of up to REMEMBERED_IP_TEXT
    characters (docs/caches.md)."""
    if not value:
        return None
    return _remembered_ip(value) if len(value) <= REMEMBERED_IP_TEXT else _read_ip(value)


@lru_cache(maxsize=4096)
def _remembered_ip(value: str) -> IPAddress | None:
    return _read_ip(value)


def _read_ip(value: str) -> IPAddress | None:
    text = value.strip().strip('"')
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def is_trusted_peer(peer: str | None, proxies: tuple[IPNetwork, ...]) -> bool:
    address = parse_ip(peer)
    return address is not None and _trusted(address, proxies)


def client_ip(
    peer: str | None,
    lines: Sequence[str],
    proxies: tuple[IPNetwork, ...],
    header: ProxyHeader = "x-forwarded-for",
) -> IPAddress | None:
    """The visitor's address: the peer, or (behind trusted proxies) the nearest untrusted hop of
    the chain in `lines`, every line of the `header` the proxies write, in the order received."""
    address = parse_ip(peer)
    if address is None or not proxies or not _trusted(address, proxies):
        return address
    chain: list[str] = []
    for line in lines:
        if header == "forwarded":
            chain += forwarded_for(line)
        else:
            chain += [part.strip() for part in line.split(",")]
    # Walk from the nearest hop outwards; the first address not belonging to a proxy is the client.
    for hop in reversed(chain):
        hop_address = parse_ip(hop)
        if hop_address is None:
            break
        address = hop_address
        if not _trusted(hop_address, proxies):
            break
    return address


def is_blocked(address: IPAddress | None, networks: tuple[IPNetwork, ...], patterns: tuple[str, ...]) -> bool:
    """True when the address is in the do-not-track list (CIDR v4/v6, exact, or `10.0.*` wildcard)."""
    if address is None:
        return False
    if any(address.version == net.version and address in net for net in networks):
        return True
    text = str(address)
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in patterns)


def stored_ip(address: IPAddress | None, mode: AnonymizeMode) -> str | None:
    """What is written to the database: the IP, its /24 (IPv4) or /48 (IPv6) prefix, or nothing."""
    if address is None or mode == "drop":
        return None
    if mode == "truncate":
        prefix = 24 if address.version == 4 else 48
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
    return str(address)
