"""The `contact-monitor` command: `serve`, and `fields` to manage the contact field registry."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from contact_monitor import __version__
from contact_monitor.core.errors import FieldError
from contact_monitor.core.fields import (
    FieldChange,
    create_field,
    install_core_fields,
    update_field,
)
from contact_monitor.core.invalidation import announce_field_change
from contact_monitor.embedded import EmbeddedError, embedded_services, running_servers
from contact_monitor.settings import Settings, SettingsError, check_data_dir
from contact_monitor.storage import Storage
from contact_monitor.storage.api_keys import ROLES, ApiKeyError
from contact_monitor.storage.db import with_driver_options
from contact_monitor.storage.fields import FIELD_TYPES, FieldDefinition

ENVIRONMENT_HELP = """\
configuration (environment variables, all optional):
  CM_MONGODB_URI       MongoDB URI; unset: an embedded SecantusDB under CM_DATA_DIR
  CM_MONGODB_DB        database name (default contact_monitor)
  CM_REDIS_URL         Redis URL; unset: an embedded redis-server under CM_DATA_DIR
  CM_REDIS_PREFIX      key prefix (default cm:), the stream is <prefix>activity
  CM_DATA_DIR          data directory of the embedded servers and the spool (default
                       ~/.local/share/contact-monitor, or $XDG_DATA_HOME/contact-monitor)
  CM_CORS_ORIGINS      comma-separated origins allowed to read responses (exact, * or wildcards)
  CM_PUBLIC_URL        address browsers reach the server at, written into /mtc.js
  CM_COOKIE_SECURE     true (default) or false for plain-http development
  CM_GRAPHIQL          true: serve the GraphiQL IDE at /graphql
  CM_DASHBOARD_ORIGINS browser origins allowed to open the /graphql websocket
  CM_TRUSTED_PROXIES, CM_PROXY_HEADER, CM_ANONYMIZE_IP, CM_DO_NOT_TRACK_IPS, CM_RESPECT_DNT,
  CM_WS_MAX_SOCKETS, CM_WS_MAX_PER_KEY, CM_KEY_RECHECK_SECONDS, ...: see README.md
"""


def _settings() -> Settings:
    return Settings.from_env()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal; with the default
    # handler that would kill us before the embedded servers are stopped.
    raise SystemExit(0)


def _reachable(settings: Settings) -> None:
    """Configured servers answer before anything starts; else one line naming the variable
    (the reason names the host, never a password)."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError
    from redis import Redis as SyncRedis
    from redis.exceptions import RedisError

    if settings.mongodb_uri is not None:
        uri = with_driver_options(settings.mongodb_uri)  # as the app will use it
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(uri)
            with client:
                client.admin.command("ping")
        except PyMongoError as exc:
            reason = str(exc).split(", Timeout:")[0]
            raise SettingsError(f"cannot reach MongoDB at CM_MONGODB_URI: {reason}") from None
    if settings.redis_url is not None:
        try:
            with SyncRedis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5) as redis:
                redis.ping()
        except RedisError as exc:
            raise SettingsError(f"cannot reach Redis at CM_REDIS_URL: {exc}") from None


def _mention_earlier_default(settings: Settings) -> None:
    """Versions before 2026-11-28 kept their data in ./data of the current directory: say so
    when that directory holds some and is not the one used now (nothing is moved)."""
    earlier = Path("data")
    if os.environ.get("CM_DATA_DIR", "").strip() or earlier.resolve() == settings.data_dir.resolve():
        return
    if (earlier / "mongodb").is_dir() or (earlier / "redis").is_dir():
        print(
            f"note: {earlier.resolve()} holds the data of an earlier contact-monitor (its default was "
            f"./data); to keep using it: CM_DATA_DIR={earlier.resolve()}",
            file=sys.stderr,
        )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from contact_monitor.serving import FrameWritingProtocol, LongTargetHttpToolsProtocol

    settings = _settings()
    check_data_dir(settings.data_dir)  # the spool and the embedded servers live there
    _reachable(settings)
    source = (
        "CM_DATA_DIR" if os.environ.get("CM_DATA_DIR", "").strip() else "default; set CM_DATA_DIR to move it"
    )
    print(f"data directory: {settings.data_dir.resolve()} ({source})", file=sys.stderr)
    _mention_earlier_default(settings)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with embedded_services(
        settings.data_dir, settings.mongodb_uri, settings.redis_url, exclusive=True
    ) as overrides:
        os.environ.update(overrides)
        for name, value in overrides.items():
            print(f"embedded {name.removeprefix('CM_').split('_')[0].lower()}: {value}", file=sys.stderr)
        uvicorn.run(
            "contact_monitor.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            # X-Forwarded-For is interpreted by the app itself, only from CM_TRUSTED_PROXIES.
            proxy_headers=False,
            server_header=False,
            http=LongTargetHttpToolsProtocol,
            ws=FrameWritingProtocol,
            # Frames of a few hundred bytes gain little from compression, and it would be paid
            # per socket for the same frame.
            ws_per_message_deflate=False,
            access_log=args.access_log,
        )
    return 0


async def _with_storage(settings: Settings, action: str, args: argparse.Namespace) -> int:
    with embedded_services(settings.data_dir, settings.mongodb_uri, "redis://unused") as overrides:
        uri = overrides.get("CM_MONGODB_URI", settings.mongodb_uri)
        assert uri is not None
        storage = Storage.connect(uri, settings.mongodb_db)
        try:
            await install_core_fields(storage)
            await storage.api_keys.create_indexes()
            result = await FIELD_ACTIONS[action](storage, args)
            if action in ("create", "update"):
                await _announce_field_change(settings)
            return result
        finally:
            await storage.close()


async def _announce_field_change(settings: Settings) -> None:
    """Running servers read the registry again at once (their Redis: configured, or the embedded
    one `serve` started under the data directory)."""
    embedded = running_servers(settings.data_dir).get("redis")
    url = settings.redis_url or (embedded.uri if embedded else None)
    if url is None:
        return  # no server running: nothing to tell
    redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        await announce_field_change(redis, settings.redis_prefix)
    finally:
        await redis.aclose()


def _describe(field: FieldDefinition) -> dict[str, object]:
    return {
        "alias": field.alias,
        "label": field.label,
        "type": field.type,
        "publicly_updatable": field.publicly_updatable,
        "unique": field.unique,
        "core": field.core,
        "max_length": field.max_length,
    }


def _print_field(field: FieldDefinition) -> None:
    flags = [
        name
        for name, on in (("publicly-updatable", field.publicly_updatable), ("unique", field.unique))
        if on
    ]
    print(f"{field.alias}: {field.type}" + (f" ({', '.join(flags)})" if flags else ""))


async def fields_list(storage: Storage, args: argparse.Namespace) -> int:
    fields = await storage.fields.all()
    if args.json:
        print(json.dumps([_describe(f) for f in fields], indent=2))
        return 0
    print(f"{'ALIAS':<20} {'TYPE':<10} {'PUBLIC':<7} {'UNIQUE':<7} LABEL")
    for f in fields:
        print(
            f"{f.alias:<20} {f.type:<10} {'yes' if f.publicly_updatable else 'no':<7} "
            f"{'yes' if f.unique else 'no':<7} {f.label}"
        )
    return 0


def _report_indexing(change: FieldChange) -> None:
    alias = change.field.alias
    if change.indexed:
        print(f"{change.indexed} contacts indexed by {alias}", file=sys.stderr)
    if change.conflicts:
        print(
            f"warning: {change.conflicts} contacts share a {alias} value with an older contact and "
            "were not indexed by it",
            file=sys.stderr,
        )


async def fields_create(storage: Storage, args: argparse.Namespace) -> int:
    change = await create_field(
        storage,
        args.alias,
        type=args.type,
        label=args.label,
        publicly_updatable=bool(args.publicly_updatable),
        unique=bool(args.unique),
        max_length=args.max_length,
    )
    _report_indexing(change)
    _print_field(change.field)
    return 0


async def fields_update(storage: Storage, args: argparse.Namespace) -> int:
    change = await update_field(
        storage,
        args.alias,
        label=args.label,
        type=args.type,
        publicly_updatable=args.publicly_updatable,
        unique=args.unique,
        max_length=args.max_length,
    )
    _report_indexing(change)
    _print_field(change.field)
    return 0


async def keys_create(storage: Storage, args: argparse.Namespace) -> int:
    key = await storage.api_keys.create(args.name, args.role)
    print(f"created key {args.name!r} with role {args.role}; it is shown only now:", file=sys.stderr)
    print(key)
    return 0


async def keys_list(storage: Storage, args: argparse.Namespace) -> int:
    print(f"{'NAME':<24} {'ROLE':<6} {'CREATED':<20} REVOKED")
    for key in await storage.api_keys.all():
        revoked = key["revoked_at"].strftime("%Y-%m-%d %H:%M:%S") if key.get("revoked_at") else "-"
        print(f"{key['_id']:<24} {key['role']:<6} {key['created_at']:%Y-%m-%d %H:%M:%S}  {revoked}")
    return 0


async def keys_revoke(storage: Storage, args: argparse.Namespace) -> int:
    await storage.api_keys.revoke(args.name)
    print(f"revoked {args.name!r}", file=sys.stderr)
    return 0


FIELD_ACTIONS = {
    "list": fields_list,
    "create": fields_create,
    "update": fields_update,
    "key-create": keys_create,
    "key-list": keys_list,
    "key-revoke": keys_revoke,
}


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, with an error that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contact-monitor",
        description="Contact-activity service: Mautic-compatible tracking endpoints, contacts in MongoDB, "
        "live activity on a Redis stream.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP server (starts embedded MongoDB/Redis when none are configured)",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_bounded(1, 65535), default=8000, help="port to listen on, 1-65535 (default 8000)"
    )
    serve.add_argument(
        "--workers",
        type=_bounded(1, 64),
        default=1,
        help="worker processes sharing the port, 1-64 (default 1)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per request (off by default: the tracking endpoints are hit on every page view)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(handler=cmd_serve)

    fields = commands.add_parser("fields", help="list, create and update contact fields")
    actions = fields.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list the contact fields and their flags")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    create = actions.add_parser("create", help="create a custom contact field")
    create.add_argument("alias", help="lower-case name used as the tracking parameter, e.g. plan")
    create.add_argument("--type", default="text", choices=FIELD_TYPES, help="value type (default text)")
    create.add_argument("--label", help="human-readable name")
    create.add_argument("--publicly-updatable", action="store_true", help="tracking requests may set it")
    create.add_argument("--unique", action="store_true", help="identifies a contact, like email")
    create.add_argument("--max-length", type=int, default=191, help="longest accepted text (default 191)")

    update = actions.add_parser("update", help="change a field's flags, label or type")
    update.add_argument("alias")
    update.add_argument(
        "--publicly-updatable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether tracking requests (pixel, mtc.js) may set the field",
    )
    update.add_argument(
        "--unique",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the field identifies a contact",
    )
    update.add_argument("--label")
    update.add_argument("--type", choices=FIELD_TYPES)
    update.add_argument("--max-length", type=int)
    for sub in (listing, create, update):
        sub.set_defaults(handler=lambda args: asyncio.run(_with_storage(_settings(), args.action, args)))

    keys = commands.add_parser("api-key", help="create, list and revoke GraphQL API keys")
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    key_create = key_actions.add_parser(
        "create", help="create a key; it is printed once, as the last line of standard output"
    )
    key_create.add_argument("--name", required=True, help="who or what uses the key, e.g. dashboard")
    key_create.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="read: query and subscribe; write: also change contacts; admin: also fields and forms",
    )
    key_list = key_actions.add_parser("list", help="list keys (never their values)")
    key_revoke = key_actions.add_parser("revoke", help="revoke a key at once")
    key_revoke.add_argument("name")
    for sub, action in ((key_create, "key-create"), (key_list, "key-list"), (key_revoke, "key-revoke")):
        sub.set_defaults(
            handler=lambda args, action=action: asyncio.run(_with_storage(_settings(), action, args))
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (SettingsError, FieldError, EmbeddedError, ApiKeyError) as exc:
        print(f"contact-monitor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `contact-monitor fields list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
