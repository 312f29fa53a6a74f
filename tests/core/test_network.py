import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contact_monitor.core import network
from contact_monitor.core.network import REMEMBERED_IP_TEXT, client_ip, is_blocked, parse_ip, stored_ip
from contact_monitor.settings import Settings

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def test_forwarded_headers_are_ignored_from_untrusted_peers():
    assert str(client_ip("198.51.100.7", ["1.2.3.4"], PROXIES)) == "198.51.100.7"
    assert str(client_ip("198.51.100.7", ["1.2.3.4"], ())) == "198.51.100.7"


def test_trusted_proxy_chain_yields_the_first_untrusted_hop():
    assert str(client_ip("10.0.0.2", ["6.6.6.6, 203.0.113.9, 10.1.1.1"], PROXIES)) == "203.0.113.9"


def test_every_line_of_the_header_counts_in_order():
    """HAProxy appends its hop as a second header line: the client's own first line is not it."""
    lines = ["6.6.6.6", "203.0.113.9"]
    assert str(client_ip("10.0.0.2", lines, PROXIES)) == "203.0.113.9"
    assert str(client_ip("10.0.0.2", ["6.6.6.6, 10.3.3.3", "10.1.1.1"], PROXIES)) == "6.6.6.6"


def test_every_hop_trusted_gives_the_farthest_one():
    assert str(client_ip("10.0.0.2", ["10.9.9.9, 10.1.1.1"], PROXIES)) == "10.9.9.9"


def test_forwarded_header_ipv6_and_ports():
    lines = ['for="[2001:db8::1]:4711";proto=https, for=10.2.2.2']
    assert str(client_ip("fd00::1", lines, PROXIES, "forwarded")) == "2001:db8::1"


def test_garbage_in_the_chain_stops_at_the_last_good_address():
    assert str(client_ip("10.0.0.2", ["junk, 203.0.113.9"], PROXIES)) == "203.0.113.9"
    assert str(client_ip("10.0.0.2", ["junk"], PROXIES)) == "10.0.0.2"


def test_parse_ip_variants():
    assert str(parse_ip("1.2.3.4:80")) == "1.2.3.4"
    assert str(parse_ip("::ffff:1.2.3.4")) == "1.2.3.4"
    assert parse_ip("nope") is None and parse_ip(None) is None


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("172.16.0.1", True),
        ("172.31.255.254", True),
        ("172.15.1.32", False),
        ("172.32.0.0", False),
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("192.0.2.1", True),
    ],
)
def test_do_not_track_list_cidr_v4_v6_exact(address, blocked):
    settings = Settings(do_not_track_ips=("172.16.0.0/12", "2001:db8::/32", "192.0.2.1"))
    result = is_blocked(parse_ip(address), settings.do_not_track_networks, settings.do_not_track_patterns)
    assert result is blocked


def test_wildcards_as_in_mautic():
    settings = Settings(do_not_track_ips=("172.15.1.*",))
    nets, pats = settings.do_not_track_networks, settings.do_not_track_patterns
    assert is_blocked(parse_ip("172.15.1.1"), nets, pats)
    assert not is_blocked(parse_ip("172.16.1.1"), nets, pats)


def test_anonymisation():
    v4, v6 = parse_ip("203.0.113.77"), parse_ip("2001:db8:abcd:1234::1")
    assert stored_ip(v4, "off") == "203.0.113.77"
    assert stored_ip(v4, "truncate") == "203.0.113.0"
    assert stored_ip(v6, "truncate") == "2001:db8:abcd::"
    assert stored_ip(v4, "drop") is None


@given(st.ip_addresses())
def test_truncation_never_keeps_host_bits(address):
    truncated = ipaddress.ip_address(stored_ip(address, "truncate"))
    prefix = 24 if address.version == 4 else 48
    assert truncated in ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert int(truncated) & ((1 << ((32 if address.version == 4 else 128) - prefix)) - 1) == 0


def test_only_a_parameter_named_for_is_a_hop():
    """A proxy writing `for=<client>;host=<Host header>`: the client's Host cannot add a hop."""
    lines = ["for=198.51.100.7;host=for=6.6.6.6"]
    assert str(client_ip("10.0.0.2", lines, PROXIES, "forwarded")) == "198.51.100.7"
    quoted = ['host="x;for=6.6.6.6";for=198.51.100.8']
    assert str(client_ip("10.0.0.2", quoted, PROXIES, "forwarded")) == "198.51.100.8"


def test_parsed_addresses_are_remembered_only_up_to_the_limit():
    """Peers and proxy hops repeat; a long header value is parsed each time, never kept."""
    network._remembered_ip.cache_clear()
    at_limit = "9.8.7.6".rjust(REMEMBERED_IP_TEXT)  # padded: stripped before parsing
    past_limit = " " + at_limit
    assert str(parse_ip(at_limit)) == "9.8.7.6" and str(parse_ip(past_limit)) == "9.8.7.6"
    assert network._remembered_ip.cache_info().currsize == 1
    for i in range(5000):
        parse_ip(f"junk-{i}")
    assert network._remembered_ip.cache_info().currsize == 4096
