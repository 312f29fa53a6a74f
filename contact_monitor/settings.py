"""Configuration: one frozen `Settings` built once from `CM_*` environment variables.

Tests build their own `Settings(...)` instead of patching the environment.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pymongo.errors import ConfigurationError, InvalidURI
from pymongo.uri_parser import parse_uri

from contact_monitor.text import parse_flag

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AnonymizeMode = Literal["off", "truncate", "drop"]
ProxyHeader = Literal["x-forwarded-for", "forwarded"]
N = TypeVar("N", int, float)
# CM_IDENTITY_SECRET: shorter is refused (it would be guessable offline from one identity_hash).
MIN_SECRET_LENGTH = 16


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    mongodb_uri: str | None = None
    mongodb_db: str = "contact_monitor"
    redis_url: str | None = None
    redis_prefix: str = "cm:"
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    cors_origins: tuple[str, ...] = ()
    public_url: str | None = None
    cookie_secure: bool = True
    cookie_domain: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Which header the trusted proxies write the client chain into (one, never both: a proxy that
    # writes only X-Forwarded-For passes a client's own Forwarded header through).
    proxy_header: ProxyHeader = "x-forwarded-for"
    anonymize_ip: AnonymizeMode = "off"
    do_not_track_ips: tuple[str, ...] = ()
    respect_dnt: bool = False
    track_by_ip: bool = False
    # Verified identification (docs/identity.md): with a secret, a unique field value on a
    # public request identifies only with identity_hash = HMAC-SHA256(secret, normalized value).
    identity_secret: str | None = field(default=None, repr=False)
    filter_bots: bool = True
    stream_maxlen: int = 100_000
    max_body_bytes: int = 64 * 1024
    field_cache_seconds: float = 2.0
    # How long a tracking request waits for MongoDB at most (server selection included): past
    # it the pixel spools its hit and the other endpoints answer 503 with Retry-After.
    track_timeout_seconds: float = 3.0
    # Contacts the tracking hot path keeps per process (0: none), invalidated through Redis.
    contact_cache_size: int = 10_000
    graphiql: bool = False
    dashboard_origins: tuple[str, ...] = ()
    subscription_queue: int = 1000
    # Websockets of /graphql: per process, per API key, not yet authenticated; and how often the
    # keys of open sockets are checked for revocation.
    ws_max_sockets: int = 1000
    ws_max_per_key: int = 200
    ws_max_unauthenticated: int = 100
    key_recheck_seconds: float = 2.0
    # Websocket subscriptions of the same operation share one execution per event; a socket
    # whose queue stays full this long is closed (4410).
    shared_feeds: bool = True
    ws_stuck_seconds: float = 30.0
    # How long a shared live feed waits for more events to send them in one write per socket.
    live_linger_ms: int = 10
    # Rules and webhooks (docs/automation.md): the stream consumer runs in every server process
    # unless turned off; entries a dead process held are taken over after automation_claim_seconds.
    automation: bool = True
    automation_claim_seconds: float = 30.0
    # How long the consumer lets a small batch of stream entries grow before handling it.
    automation_linger_ms: int = 500
    webhook_timeout_seconds: float = 5.0
    webhook_retry_seconds: float = 10.0
    webhook_max_attempts: int = 10
    webhook_disable_after: int = 20
    # Webhook receivers on loopback, private or link-local addresses (refused unless set).
    webhook_allow_private: bool = False
    # Parsed form of do_not_track_ips, filled in __post_init__.
    _dnt_networks: tuple[IPNetwork, ...] = field(default=(), repr=False, compare=False)
    _dnt_patterns: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.track_by_ip and self.anonymize_ip != "off":
            raise SettingsError(
                "CM_TRACK_BY_IP cannot be combined with CM_ANONYMIZE_IP: with anonymised IPs every "
                "visitor behind the same truncated address would become one contact"
            )
        if self.anonymize_ip not in ("off", "truncate", "drop"):
            raise SettingsError(f"CM_ANONYMIZE_IP must be off, truncate or drop, not {self.anonymize_ip!r}")
        if self.stream_maxlen < 1:
            raise SettingsError("CM_STREAM_MAXLEN must be a positive integer")
        for name, value in (
            ("CM_WS_MAX_SOCKETS", self.ws_max_sockets),
            ("CM_WS_MAX_PER_KEY", self.ws_max_per_key),
            ("CM_WS_MAX_UNAUTHENTICATED", self.ws_max_unauthenticated),
        ):
            if not 1 <= value <= 1_000_000:
                raise SettingsError(f"{name} must be between 1 and 1000000, not {value}")
        if not 0.1 <= self.key_recheck_seconds <= 3600:
            raise SettingsError(
                f"CM_KEY_RECHECK_SECONDS must be between 0.1 and 3600, not {self.key_recheck_seconds}"
            )
        if not 0.1 <= self.ws_stuck_seconds <= 86_400:
            raise SettingsError(
                f"CM_WS_STUCK_SECONDS must be between 0.1 and 86400, not {self.ws_stuck_seconds}"
            )
        if not 0 <= self.live_linger_ms <= 1000:
            raise SettingsError(f"CM_LIVE_LINGER_MS must be between 0 and 1000, not {self.live_linger_ms}")
        if not 1 <= self.subscription_queue <= 1_000_000:
            raise SettingsError("CM_SUBSCRIPTION_QUEUE must be between 1 and 1000000")
        if self.identity_secret is not None and len(self.identity_secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"CM_IDENTITY_SECRET must be at least {MIN_SECRET_LENGTH} characters (a random string, "
                "e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        if not 0.1 <= self.track_timeout_seconds <= 60:
            raise SettingsError(
                f"CM_TRACK_TIMEOUT_SECONDS must be between 0.1 and 60, not {self.track_timeout_seconds}"
            )
        if not 0 <= self.contact_cache_size <= 10_000_000:
            raise SettingsError(
                f"CM_CONTACT_CACHE_SIZE must be between 0 and 10000000, not {self.contact_cache_size}"
            )
        for name, number, low, high in (
            ("CM_AUTOMATION_CLAIM_SECONDS", self.automation_claim_seconds, 0.1, 86_400),
            ("CM_AUTOMATION_LINGER_MS", self.automation_linger_ms, 0, 5000),
            ("CM_WEBHOOK_TIMEOUT_SECONDS", self.webhook_timeout_seconds, 0.1, 60),
            ("CM_WEBHOOK_RETRY_SECONDS", self.webhook_retry_seconds, 0.01, 3600),
            ("CM_WEBHOOK_MAX_ATTEMPTS", self.webhook_max_attempts, 1, 100),
            ("CM_WEBHOOK_DISABLE_AFTER", self.webhook_disable_after, 1, 10_000),
        ):
            if not low <= number <= high:
                raise SettingsError(f"{name} must be between {low:g} and {high:g}, not {number}")
        if self.max_body_bytes < 1024:
            raise SettingsError("CM_MAX_BODY_BYTES must be at least 1024")
        _check_uris(self.mongodb_uri, self.redis_url)
        networks: list[IPNetwork] = []
        patterns: list[str] = []
        for entry in self.do_not_track_ips:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "*" not in entry:
                    raise SettingsError(
                        f"CM_DO_NOT_TRACK_IPS: {entry!r} is neither an IP, a CIDR range nor a wildcard "
                        "such as 10.0.*"
                    ) from None
                patterns.append(entry)
        object.__setattr__(self, "_dnt_networks", tuple(networks))
        object.__setattr__(self, "_dnt_patterns", tuple(patterns))

    @property
    def do_not_track_networks(self) -> tuple[IPNetwork, ...]:
        return self._dnt_networks

    @property
    def do_not_track_patterns(self) -> tuple[str, ...]:
        return self._dnt_patterns

    @property
    def stream_key(self) -> str:
        """The Redis stream every stored activity is appended to."""
        return f"{self.redis_prefix}activity"

    @property
    def online_key(self) -> str:
        """The Redis sorted set of contacts by time of their last page hit."""
        return f"{self.redis_prefix}online"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every `CM_*` variable once; raise `SettingsError` naming the bad one."""
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def flag(name: str, default: bool) -> bool:
            value = text(name)
            if value is None:
                return default
            parsed = parse_flag(value)
            if parsed is not None:
                return parsed
            raise SettingsError(f"{name} must be true or false, not {value!r}")

        def converted(name: str, default: N, kind: Callable[[str], N], what: str) -> N:
            value = text(name)
            if value is None:
                return default
            try:
                return kind(value)
            except ValueError:
                raise SettingsError(f"{name} must be {what}, not {value!r}") from None

        def integer(name: str, default: int) -> int:
            return converted(name, default, int, "an integer")

        def number(name: str, default: float) -> float:
            return converted(name, default, float, "a number")

        def items(name: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())

        def origins(name: str) -> tuple[str, ...]:
            """Browser origins: `scheme://host[:port]`, wildcards allowed, nothing after the host.
            A path or a trailing slash would never match a browser's Origin header."""
            found = items(name)
            for entry in found:
                if entry == "*":
                    continue
                scheme, separator, rest = entry.partition("://")
                if not separator or scheme.lower() not in ("http", "https") or not rest or "/" in rest:
                    raise SettingsError(
                        f"{name}: {entry!r} is not an origin; write scheme://host[:port] with no path "
                        "or trailing slash, e.g. https://www.example.com (wildcards: https://*.example.com)"
                    )
            return found

        proxies: list[IPNetwork] = []
        for entry in items("CM_TRUSTED_PROXIES"):
            try:
                proxies.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise SettingsError(f"CM_TRUSTED_PROXIES: {entry!r} is not an IP or CIDR range") from None

        proxy_header = (text("CM_PROXY_HEADER") or "x-forwarded-for").lower()
        if proxy_header not in ("x-forwarded-for", "forwarded"):
            raise SettingsError(f"CM_PROXY_HEADER must be x-forwarded-for or forwarded, not {proxy_header!r}")

        anonymize = (text("CM_ANONYMIZE_IP") or "off").lower()
        # A yes/no word means truncate/off; "none" drops the IP.
        switch = parse_flag(anonymize)
        if switch is not None:
            anonymize = "truncate" if switch else "off"
        elif anonymize == "none":
            anonymize = "drop"
        if anonymize not in ("off", "truncate", "drop"):
            raise SettingsError(f"CM_ANONYMIZE_IP must be off, truncate or drop, not {anonymize!r}")

        public_url = text("CM_PUBLIC_URL")
        if public_url is not None:
            parts = urlsplit(public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
                raise SettingsError(
                    f"CM_PUBLIC_URL must look like https://track.example.com, not {public_url!r}"
                )
            public_url = f"{parts.scheme}://{parts.netloc}"

        return cls(
            mongodb_uri=text("CM_MONGODB_URI"),
            mongodb_db=text("CM_MONGODB_DB") or "contact_monitor",
            redis_url=text("CM_REDIS_URL"),
            redis_prefix=env.get("CM_REDIS_PREFIX", "cm:"),
            data_dir=Path(text("CM_DATA_DIR") or default_data_dir(env)),
            cors_origins=origins("CM_CORS_ORIGINS"),
            public_url=public_url,
            cookie_secure=flag("CM_COOKIE_SECURE", True),
            cookie_domain=text("CM_COOKIE_DOMAIN"),
            trusted_proxies=tuple(proxies),
            proxy_header=proxy_header,  # type: ignore[arg-type]  # checked above
            anonymize_ip=anonymize,  # type: ignore[arg-type]
            do_not_track_ips=items("CM_DO_NOT_TRACK_IPS"),
            respect_dnt=flag("CM_RESPECT_DNT", False),
            track_by_ip=flag("CM_TRACK_BY_IP", False),
            identity_secret=text("CM_IDENTITY_SECRET"),
            filter_bots=flag("CM_FILTER_BOTS", True),
            stream_maxlen=integer("CM_STREAM_MAXLEN", 100_000),
            max_body_bytes=integer("CM_MAX_BODY_BYTES", 64 * 1024),
            field_cache_seconds=number("CM_FIELD_CACHE_SECONDS", 2.0),
            contact_cache_size=integer("CM_CONTACT_CACHE_SIZE", 10_000),
            track_timeout_seconds=number("CM_TRACK_TIMEOUT_SECONDS", 3.0),
            graphiql=flag("CM_GRAPHIQL", False),
            dashboard_origins=origins("CM_DASHBOARD_ORIGINS"),
            subscription_queue=integer("CM_SUBSCRIPTION_QUEUE", 1000),
            ws_max_sockets=integer("CM_WS_MAX_SOCKETS", 1000),
            ws_max_per_key=integer("CM_WS_MAX_PER_KEY", 200),
            ws_max_unauthenticated=integer("CM_WS_MAX_UNAUTHENTICATED", 100),
            key_recheck_seconds=number("CM_KEY_RECHECK_SECONDS", 2.0),
            shared_feeds=flag("CM_SHARED_FEEDS", True),
            ws_stuck_seconds=number("CM_WS_STUCK_SECONDS", 30.0),
            live_linger_ms=integer("CM_LIVE_LINGER_MS", 10),
            automation=flag("CM_AUTOMATION", True),
            automation_claim_seconds=number("CM_AUTOMATION_CLAIM_SECONDS", 30.0),
            automation_linger_ms=integer("CM_AUTOMATION_LINGER_MS", 500),
            webhook_timeout_seconds=number("CM_WEBHOOK_TIMEOUT_SECONDS", 5.0),
            webhook_retry_seconds=number("CM_WEBHOOK_RETRY_SECONDS", 10.0),
            webhook_max_attempts=integer("CM_WEBHOOK_MAX_ATTEMPTS", 10),
            webhook_disable_after=integer("CM_WEBHOOK_DISABLE_AFTER", 20),
            webhook_allow_private=flag("CM_WEBHOOK_ALLOW_PRIVATE", False),
        )


def _check_uris(mongodb_uri: str | None, redis_url: str | None) -> None:
    """A URI that cannot work is refused at start, naming its variable (and not repeating it:
    it may hold a password)."""
    if mongodb_uri is not None:
        if not mongodb_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise SettingsError("CM_MONGODB_URI must start with mongodb:// or mongodb+srv://")
        if mongodb_uri.startswith("mongodb://"):  # (an SRV URI is resolved when connecting)
            try:
                parse_uri(mongodb_uri)
            except (InvalidURI, ConfigurationError, ValueError) as exc:
                raise SettingsError(f"CM_MONGODB_URI is not a valid MongoDB URI: {exc}") from None
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("CM_REDIS_URL must start with redis://, rediss:// or unix://")


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where the service keeps its files without CM_DATA_DIR: per user, whatever the current
    directory (`$XDG_DATA_HOME/contact-monitor`, else `~/.local/share/contact-monitor`), so that
    `serve` and every subcommand find the same data from anywhere."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "contact-monitor"


def check_data_dir(path: Path) -> None:
    """`SettingsError` naming CM_DATA_DIR unless the directory exists (or can be made) and
    takes files."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"CM_DATA_DIR {str(path)!r} cannot hold the service's files ({exc.strerror or exc}): "
            "set CM_DATA_DIR to a writable directory"
        ) from None
