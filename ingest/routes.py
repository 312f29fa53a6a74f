"""The public tracking endpoints. Thin: read the request, call the pipeline, build the response.

/mtracking.gif   records a hit, always answers the 43-byte GIF
/mtc/event       records a hit, answers JSON with the visitor's ids (what mtc.js posts to)
/mtc             the visitor's ids, creating an anonymous contact when there is none
Methods, bodies and status codes: docs/tracking-protocol.md, "Endpoints" and "Responses".
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.errors import PyMongoError
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from contact_monitor.core.activity import now_ms
from contact_monitor.core.errors import PayloadTooLarge
from contact_monitor.core.fields import FieldValue
from contact_monitor.core.keys import key_of
from contact_monitor.core.network import IPAddress, client_ip, parse_ip, stored_ip
from contact_monitor.core.services import Services
from contact_monitor.core.traffic import RECORDED, site_of
from contact_monitor.settings import Settings
from ingest.cookies import CONTACT_COOKIE, DEVICE_COOKIE, set_tracking_cookies
from ingest.cors import origin_allowed
from ingest.hit import build_hit
from ingest.payload import (
    MAX_KEYS,
    ParamsBuilder,
    merge_d,
    merge_page_url_query,
    parse_json_body,
    parse_query,
)
from ingest.pipeline import Endpoint, IngestPipeline, Outcome, Visit
from ingest.policy import privacy_signals, skip_reason
from ingest.spool import HitSpool
from ingest.useragent import UserAgent

log = logging.getLogger(__name__)

# File fields a multipart form may carry (each ignored): a bound for the parser.
MAX_MULTIPART_FILES = 20
GIF = base64.b64decode("R0lGODlhAQABAJAAAP8AAAAAACH5BAUQAAAALAAAAAABAAEAAAICBAEAOw==")
GIF_HEADERS = {
    "Cache-Control": "private, no-cache, no-cache=Set-Cookie, proxy-revalidate",
    "Expires": "Wed, 11 Jan 2000 12:59:00 GMT",
    "Last-Modified": "Wed, 11 Jan 2006 12:59:00 GMT",
    "Pragma": "no-cache",
}
NO_STORE = {"Cache-Control": "no-store"}
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


async def read_body(request: Request, limit: int, *, keep_prefix: bool = False) -> bytes:
    """The body, or `PayloadTooLarge` as soon as it passes `limit` bytes (never buffered beyond it).
    With `keep_prefix`, a larger body is not refused: its first `limit + 1` bytes are returned, so
    that the parameters which fit are kept (`parse_query` cuts at the last complete pair)."""
    declared = request.headers.get("content-length", "")
    if not keep_prefix and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            if keep_prefix:
                chunks.append(chunk)
                return b"".join(chunks)[: limit + 1]
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def collect_params(
    request: Request, body: bytes, limit: int, content_type: str | None = None
) -> ParamsBuilder:
    """Query string, then body (POST wins), then `d`, then the page URL's own query string.
    `content_type`: the request's header, when already read."""
    builder = ParamsBuilder()
    parse_query(request.scope.get("query_string", b""), builder, limit=limit)
    if body:
        if content_type is None:
            content_type = request.headers.get("content-type", "")
        content_type = content_type.split(";", 1)[0].strip().lower()
        if content_type == "application/json":
            parse_json_body(body, builder)
        elif content_type in ("", "application/x-www-form-urlencoded", "text/plain"):
            parse_query(body, builder, limit=limit)
        elif content_type == "multipart/form-data":  # how Mautic's form HTML posts
            await parse_multipart(request, body, builder)
        else:
            builder.warn(f"request body of type {content_type!r} was ignored")
    merge_d(builder)
    merge_page_url_query(builder)
    return builder


async def parse_multipart(request: Request, body: bytes, builder: ParamsBuilder) -> None:
    """The text fields of a `multipart/form-data` body (already within the body limit); file
    fields are ignored with a warning (we store no uploads)."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(
        request.headers, stream(), max_files=MAX_MULTIPART_FILES, max_fields=MAX_KEYS, max_part_size=len(body)
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        builder.warn(f"the multipart body could not be read and was ignored ({exc.message})")
        return
    try:
        pairs = [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
        if files := len(form.multi_items()) - len(pairs):
            builder.warn(f"{files} file field(s) of the multipart body were ignored")
        builder.add_pairs(pairs)
    finally:
        await form.close()


async def holds_api_key(headers: Mapping[str, str], services: Services) -> bool:
    """Like Mautic's logged-in users: requests made with a valid API key are never tracked."""
    header = headers.get("authorization")
    return header is not None and await key_of(services.storage, header) is not None


def build_visit(
    request: Request,
    settings: Settings,
    endpoint: Endpoint,
    builder: ParamsBuilder,
    *,
    address: IPAddress | None,
    user_agent: UserAgent,
    field_aliases: frozenset[str] = frozenset(),
    referer: str | None = None,
    values: Mapping[str, FieldValue] | None = None,
    form: Mapping[str, Any] | None = None,
    received: tuple[ObjectId, dt.datetime] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Visit:
    """The typed visit of a request whose parameters are collected (pure). `received`: the hit id
    and time fixed when the request arrived (the pixel's, kept when it is spooled). `headers`:
    the request's, already read (`first_values`)."""
    headers = first_values(request) if headers is None else headers
    hit = build_hit(
        builder.params,
        now=received[1] if received else now_ms(),
        warnings=builder.warnings,
        referer_header=referer or headers.get("referer"),
        accept_language=headers.get("accept-language"),
        device_cookie=request.cookies.get(DEVICE_COOKIE),
        field_aliases=field_aliases,
        privacy=privacy_signals(headers),
    )
    return Visit(
        endpoint=endpoint,
        hit=hit,
        user_agent=user_agent,
        ip=stored_ip(address, settings.anonymize_ip),
        contact_cookie=request.cookies.get(CONTACT_COOKIE),
        values=values,
        form=form,
        hit_id=received[0] if received else None,
    )


def first_values(request: Request) -> dict[str, str]:
    """The request's headers by name, each with its first value (what `request.headers.get`
    answers), read in one pass: a tracking request asks for a dozen headers, most of them absent,
    and Starlette's `Headers` scans the whole list for each (raising a KeyError for every miss)."""
    values: dict[str, str] = {}
    for name, value in reversed(request.scope["headers"]):
        values[name.decode("latin-1").lower()] = value.decode("latin-1")
    return values


def visitor_address(request: Request, settings: Settings) -> IPAddress | None:
    client = request.scope.get("client")
    peer = client[0] if client else None
    if not settings.trusted_proxies:  # the peer is the visitor: no header to read
        return parse_ip(peer)
    header = settings.proxy_header
    return client_ip(peer, request.headers.getlist(header), settings.trusted_proxies, header)


async def visit_from_request(
    request: Request,
    services: Services,
    endpoint: Endpoint,
    body: bytes,
    received: tuple[ObjectId, dt.datetime] | None = None,
) -> tuple[Visit | None, list[str]]:
    """Parse the request (pure apart from the cached field list). None: not to be recorded."""
    settings = services.settings
    headers = first_values(request)
    builder = await collect_params(request, body, settings.max_body_bytes, headers.get("content-type", ""))
    pipeline: IngestPipeline = request.state.pipeline
    user_agent = await pipeline.agents.parse(headers.get("user-agent", ""))
    address = visitor_address(request, settings)
    reason = skip_reason(settings, method=request.method, headers=headers, user_agent=user_agent, ip=address)
    if reason is None and await holds_api_key(headers, services):
        reason = "the request carries an API key (integrations are not visitors)"
    page_url = builder.params.get("page_url")
    page_url = page_url if isinstance(page_url, str) else None
    origin = headers.get("origin")
    try:  # counts for the dashboard: never a reason to fail a hit
        services.traffic.note(
            site_of(origin, page_url, headers.get("referer")),
            RECORDED if reason is None else reason,
            page_url,
            cors_refused=bool(origin) and not origin_allowed(origin or "", settings.cors_origins),
        )
    except Exception:
        log.exception("the traffic counts skipped a request")
    if reason is not None:
        return None, [*builder.warnings, f"not recorded: {reason}"]
    visit = build_visit(
        request,
        settings,
        endpoint,
        builder,
        address=address,
        user_agent=user_agent,
        field_aliases=await services.fields.public_aliases(),
        received=received,
        headers=headers,
    )
    return visit, list(visit.hit.warnings)


async def record(
    request: Request,
    endpoint: Endpoint,
    body: bytes,
    received: tuple[ObjectId, dt.datetime] | None = None,
) -> tuple[Outcome | None, list[str]]:
    """Record the request; MongoDB gets CM_TRACK_TIMEOUT_SECONDS in all (a `PyMongoError` past it)."""
    services: Services = request.state.services
    counted = services.metrics.count
    with pymongo.timeout(services.settings.track_timeout_seconds):
        visit, warnings = await visit_from_request(request, services, endpoint, body, received)
        if visit is None:
            counted(endpoint, "skipped")
            return None, warnings
        pipeline: IngestPipeline = request.state.pipeline
        try:
            outcome = await pipeline.track(visit)
        except Exception:
            counted(endpoint, "failed")
            raise
    counted(endpoint, "recorded")
    return outcome, outcome.warnings


def with_cookies(response: Response, request: Request, outcome: Outcome | None) -> Response:
    if outcome is not None and outcome.contact_id and outcome.device_id:
        set_tracking_cookies(
            response,
            request.state.services.settings,
            contact_id=outcome.contact_id,
            device_id=outcome.device_id,
            hit_id=outcome.hit_id,
        )
    return response


async def tracking_pixel(request: Request) -> Response:
    """Never an error page: whatever happens, the browser gets its GIF. While MongoDB is
    unavailable the hit goes to the spool (ingest/spool.py) and is recorded later."""
    outcome = None
    spool: HitSpool = request.state.pipeline.spool
    body = b""
    # The hit's id and time, fixed at receipt: a hit spooled after a failed attempt that MongoDB
    # applied after all is recognised by its id when replayed, and not written twice.
    received = (ObjectId(), now_ms())
    try:
        body = await read_body(request, request.state.services.settings.max_body_bytes, keep_prefix=True)
        if spool.open:
            await spool_or_log(spool, request, body, received)
        else:
            outcome, _ = await record(request, "pixel", body, received)
    except PyMongoError:
        spool.failed()
        log.warning("MongoDB unavailable: the pixel hit is spooled")
        await spool_or_log(spool, request, body, received)
    except Exception:  # the promise is the GIF: a bug is logged, never shown to the page
        log.exception("pixel hit failed")
    headers = {**GIF_HEADERS, "Content-Length": str(len(GIF))}
    response = Response(GIF if request.method != "HEAD" else b"", media_type="image/gif", headers=headers)
    return with_cookies(response, request, outcome)


async def spool_or_log(
    spool: HitSpool, request: Request, body: bytes, received: tuple[ObjectId, dt.datetime]
) -> None:
    counted = request.state.services.metrics.count
    try:
        await spool.append(request, body, received)
    except OSError:
        counted("pixel", "lost")
        log.exception("the pixel hit could not be spooled either: it is lost")
    else:
        counted("pixel", "spooled")


async def replay_hit(request: Request, hit_id: ObjectId, received_at: dt.datetime) -> None:
    """A spooled pixel request, recorded as it would have been when it arrived (once: a hit id
    already stored is skipped)."""
    services: Services = request.state.services
    if await services.storage.hits.exists(hit_id):
        return
    body = await request.body()
    visit, _ = await visit_from_request(request, services, "pixel", body, received=(hit_id, received_at))
    if visit is not None:
        pipeline: IngestPipeline = request.state.pipeline
        await pipeline.track(visit)


def ids_body(outcome: Outcome | None, request: Request) -> dict[str, object]:
    if outcome is None:  # not recorded: report what the browser already holds, nothing new
        device_id = request.cookies.get(DEVICE_COOKIE)
        return {"id": None, "sid": device_id, "device_id": device_id}
    return {"id": outcome.contact_id, "sid": outcome.device_id, "device_id": outcome.device_id}


async def tracking_event(request: Request) -> Response:
    """Errors (413, and 503 while MongoDB is down) are answered by the app's exception handlers."""
    services: Services = request.state.services
    body = await read_body(request, services.settings.max_body_bytes)
    outcome, warnings = await record(request, "event", body)
    payload: dict[str, object] = {"success": 1, **ids_body(outcome, request), "events": []}
    if warnings:
        payload["warnings"] = warnings
    return with_cookies(JSONResponse(payload, headers=NO_STORE), request, outcome)


async def tracked_contact(request: Request) -> Response:
    outcome, _ = await record(request, "mtc", b"")
    return with_cookies(JSONResponse(ids_body(outcome, request), headers=NO_STORE), request, outcome)


class PixelFastPath:
    """The pixel without the layers it does not need: a request for /mtracking.gif without an
    `Origin` header (what an <img> sends; CORS has nothing to add) goes straight to
    `tracking_pixel`, past CORS, the exception middleware and the router (the pixel answers its
    GIF whatever happens, so none of them has anything to do). Everything else passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == PIXEL_PATH
            and scope["method"] in ANY_METHOD  # OPTIONS is CORS's, others get the router's 405
            and not any(name == b"origin" for name, _ in scope["headers"])
        ):
            response = await tracking_pixel(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


PIXEL_PATH = "/mtracking.gif"
routes = [
    Route(PIXEL_PATH, tracking_pixel, methods=ANY_METHOD),
    Route("/mtc/event", tracking_event, methods=ANY_METHOD),
    Route("/mtc", tracked_contact, methods=ANY_METHOD),
]
