"""The ASGI application: `create_app(settings)` and a lifespan that opens and closes MongoDB and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import web
from api.app import GraphQLEndpoint
from contact_monitor import __version__
from contact_monitor.core.errors import Unauthenticated, UserError
from contact_monitor.core.fields import install_core_fields
from contact_monitor.core.identity import sweep_forever
from contact_monitor.core.keys import key_of
from contact_monitor.core.services import Services
from contact_monitor.settings import Settings, SettingsError
from contact_monitor.storage import Storage
from contact_monitor.storage.redis_client import Redis
from ingest import form_submit as form_routes
from ingest import routes as ingest_routes
from ingest.cors import CORSMiddleware
from ingest.pipeline import IngestPipeline
from ingest.routes import PixelFastPath, replay_hit
from ingest.useragent import warm_up
from mtc_js import forms as form_embed
from mtc_js import routes as tracker_routes
from subscriptions.hub import StreamHub
from subscriptions.shared import SharedFeeds

log = logging.getLogger(__name__)


def error_response(
    request: Request, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> Response:
    """The one error body of the HTTP endpoints: GraphQL-shaped on /graphql, and on the tracking
    endpoints what Mautic's tracker reads (`success: 0`) with the message and the code."""
    if request.url.path.startswith("/graphql"):
        body: dict[str, object] = {
            "data": None,
            "errors": [{"message": message, "extensions": {"code": code}}],
        }
    else:
        body = {"success": 0, "error": message, "code": code}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


def watch(
    services: Services,
    storage: Storage,
    hub: StreamHub,
    shared: SharedFeeds | None,
    graphql: GraphQLEndpoint,
    pipeline: IngestPipeline,
) -> None:
    """Connect what the composition root owns to the metrics."""
    metrics = services.metrics
    for batcher in storage.batchers():
        batcher.on_batch = metrics.observe_batch

    def subscriptions() -> int:
        # The hub's subscribers are lone subscriptions and groups; a group counts its members.
        if shared is None:
            return len(hub.subscribers)
        return len(hub.subscribers) - len(shared.groups) + shared.members

    metrics.gauge("cm_subscribers", "Live-feed subscriptions open in this process.", subscriptions)
    if shared is not None:
        metrics.gauge(
            "cm_shared_feeds",
            "Groups of live subscriptions sharing one execution per event.",
            lambda: len(shared.groups),
        )
        metrics.gauge(
            "cm_stuck_sockets_closed",
            "Subscriptions given up because their socket stopped reading (closed with 4410, or dropped).",
            lambda: shared.closed_stuck,
        )
        metrics.gauge(
            "cm_stuck_sockets_dropped",
            "Of those, connections dropped because even the close could not be written in time.",
            lambda: shared.aborted_stuck,
        )
    metrics.gauge("cm_stream_reader_restarts", "Restarts of the stream reader.", lambda: hub.restarts)
    metrics.gauge(
        "cm_websockets", "Websockets open on /graphql in this process.", lambda: graphql.sockets.open
    )
    cache = storage.contacts.cache
    metrics.gauge(
        "cm_contact_cache_enabled",
        "1 while the tracking contact cache is on (this process hears the invalidation channel).",
        lambda: int(cache.enabled),
    )
    metrics.gauge("cm_contact_cache_entries", "Contacts held by the tracking contact cache.", cache.__len__)
    metrics.gauge(
        "cm_contact_cache_hits", "Tracking hits whose contact came from the cache.", lambda: cache.hits
    )
    metrics.gauge(
        "cm_contact_cache_misses", "Tracking hits whose contact was read from MongoDB.", lambda: cache.misses
    )
    metrics.gauge("cm_spool_depth", "Pixel hits spooled, waiting for MongoDB.", pipeline.spool.depth)
    automation = services.automation
    metrics.gauge(
        "cm_automation_lag_seconds",
        "Age of the newest stream entry the rules/webhooks consumer of this process handled, when it did.",
        lambda: automation.lag_seconds,
    )
    metrics.gauge(
        "cm_automation_handled", "Stream entries this process's consumer handled.", lambda: automation.handled
    )
    metrics.gauge(
        "cm_automation_idle_seconds",
        "Seconds since this process's rules/webhooks consumer last handled a batch (grows when it is "
        "stuck or the stream is quiet).",
        lambda: time.monotonic() - automation.handled_at,
    )
    metrics.gauge(
        "cm_automation_skipped",
        "Activities the rules could not evaluate (logged).",
        lambda: automation.skipped,
    )
    metrics.gauge("cm_rule_firings", "Rules this process fired.", lambda: services.rules.fired)
    metrics.gauge(
        "cm_webhook_delivered",
        "Webhook deliveries this process delivered.",
        lambda: services.webhooks.delivered,
    )
    metrics.gauge(
        "cm_webhook_failed_attempts",
        "Webhook attempts of this process that failed (retried with backoff).",
        lambda: services.webhooks.failed_attempts,
    )


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus' text format; scraping needs an API key (any role), like the GraphQL API."""
    services: Services = request.state.services
    if await key_of(services.storage, request.headers.get("authorization")) is None:
        raise Unauthenticated(
            "/metrics needs an API key: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
        )
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def user_error(request: Request, exc: Exception) -> Response:
    """A request refused before any work (401, 413, ...): the error says why."""
    assert isinstance(exc, UserError)
    return error_response(request, exc.status, exc.message, exc.code, exc.headers)


async def health(request: Request) -> Response:
    """200 when MongoDB and Redis answer and the stream reader runs; 503 naming what does not."""
    services: Services = request.state.services
    checks: dict[str, str] = {}
    try:
        await services.storage.db.command("ping")
        checks["mongodb"] = "ok"
    except PyMongoError as exc:
        checks["mongodb"] = f"unavailable: {type(exc).__name__}"
    try:
        await services.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    checks["stream_reader"] = request.state.hub.status()
    try:  # stream entries waiting for Redis (docs/data-contract.md, "Activity stream")
        outbox_depth: int | str = await services.storage.outbox.depth()
    except PyMongoError:
        outbox_depth = "unknown"
    spool_depth = await asyncio.to_thread(request.state.pipeline.spool.depth)  # hits waiting for MongoDB
    healthy = checks["mongodb"] == "ok" and checks["redis"] == "ok" and checks["stream_reader"] != "stopped"
    body = {
        "status": "ok" if healthy else "unavailable",
        "version": __version__,
        **checks,
        "outbox_depth": outbox_depth,
        "spool_depth": spool_depth,
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


async def storage_unavailable(request: Request, exc: Exception) -> Response:
    """The one handler for outages that an endpoint did not handle itself: 503, never a 500."""
    log.error(
        "%s %s: %s unavailable: %s",
        request.method,
        request.url.path,
        "MongoDB" if isinstance(exc, PyMongoError) else "Redis",
        exc,
    )
    return error_response(
        request,
        503,
        "storage temporarily unavailable, retry later",
        "SERVICE_UNAVAILABLE",
        {"Retry-After": "5"},
    )


async def stop_tasks(tasks: list[asyncio.Task[None]], grace: float = 5.0) -> None:
    """Cancel the app's background tasks and wait for them; one that swallowed its cancellation
    (a library turning it into a timeout) is cancelled again rather than waited for forever."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        for _ in range(3):
            done, _ = await asyncio.wait({task}, timeout=grace)
            if done:
                break
            log.warning("background task %s did not stop; cancelling it again", task.get_name())
            task.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("background task %s had failed", task.get_name(), exc_info=task.exception())


def create_app(settings: Settings) -> Starlette:
    if not settings.mongodb_uri or not settings.redis_url:
        raise SettingsError(
            "create_app needs CM_MONGODB_URI and CM_REDIS_URL; `contact-monitor serve` starts embedded "
            "servers and sets them when they are not configured"
        )
    mongodb_uri, redis_url = settings.mongodb_uri, settings.redis_url
    graphql = GraphQLEndpoint(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        storage = Storage.connect(
            mongodb_uri, settings.mongodb_db, contact_cache_size=settings.contact_cache_size
        )
        # Bounded waits: a Redis outage delays a hit by seconds at most, it never hangs it.
        redis = Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
        try:
            await storage.create_indexes(by_ip=settings.track_by_ip)
            await install_core_fields(storage)
            await redis.ping()
            await asyncio.to_thread(warm_up)
            # What start-up built lives as long as the process: keep it out of every later
            # collection (fewer and shorter GC pauses under load).
            gc.collect()
            gc.freeze()
            services = Services.open(settings, storage, redis)
            hub = StreamHub(redis, settings.stream_key, settings.subscription_queue)
            await hub.start()
            shared = (
                SharedFeeds(
                    hub,
                    settings.subscription_queue,
                    settings.ws_stuck_seconds,
                    settings.live_linger_ms / 1000,
                )
                if settings.shared_feeds
                else None
            )
            republisher = asyncio.create_task(services.publisher.republish(), name="outbox-republisher")
            pipeline = IngestPipeline(services)
            watch(services, storage, hub, shared, graphql, pipeline)
            for batcher in storage.batchers():  # a request waits no longer for its batch
                batcher.timeout = settings.track_timeout_seconds
            state: dict[str, object] = {
                "services": services,
                "pipeline": pipeline,
                "hub": hub,
                "shared": shared,
            }
            replayer = asyncio.create_task(
                pipeline.spool.replay_forever(state, replay_hit), name="spool-replayer"
            )
            follower = asyncio.create_task(services.invalidations.follow(), name="invalidations")
            sweeper = asyncio.create_task(sweep_forever(storage), name="merge-sweeper")
            counter = asyncio.create_task(services.traffic.flush_forever(), name="traffic-counts")
            tasks = [republisher, replayer, follower, sweeper, counter]
            workers = []  # rules and webhooks (docs/automation.md): stopped between their work
            if settings.automation:
                workers = [
                    (services.automation, asyncio.create_task(services.automation.run(), name="automation")),
                    (
                        services.webhooks,
                        asyncio.create_task(services.webhooks.send_forever(), name="webhooks"),
                    ),
                ]
            try:
                # request.state.services / .pipeline / .hub; GraphQL gets them through its context.
                try:
                    yield state
                finally:
                    pipeline.close()
                    await graphql.sockets.stop()
                    for worker, task in workers:
                        await worker.stop(task)
                    await stop_tasks(tasks)
                    await services.traffic.close()
                    await services.webhooks.close()
                    if settings.automation:
                        await services.automation.close()
                    await services.invalidations.close()
            finally:
                await hub.stop()
        finally:
            await redis.aclose()
            await storage.close()

    return Starlette(
        routes=[
            *ingest_routes.routes,
            *form_routes.routes,
            *tracker_routes.routes,
            *form_embed.routes,
            *graphql.routes(),
            *web.routes(settings),
            Route("/health", health),
            Route("/metrics", metrics_endpoint),
        ],
        middleware=[
            Middleware(PixelFastPath),
            Middleware(
                CORSMiddleware, allowed_origins=settings.cors_origins, api_origins=settings.dashboard_origins
            ),
        ],
        lifespan=lifespan,
        exception_handlers={
            UserError: user_error,
            PyMongoError: storage_unavailable,
            RedisError: storage_unavailable,
        },
    )


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` and for `contact-monitor serve --workers N`."""
    return create_app(Settings.from_env())
