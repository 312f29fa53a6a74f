"""/graphql over HTTP: API keys checked before Strawberry sees the request, context per request.

`Authorization: Bearer <key>` is required; a missing or invalid key raises `Unauthenticated`,
which the app's exception handler answers with a 401 GraphQL-shaped error. GraphiQL (GET with
Accept: text/html) is served only with CM_GRAPHIQL=true.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from api import web
from api.context import Context
from api.live import Switch, live_operation
from api.schema import schema
from api.sockets import SOCKET_KEY, STUCK_CODE, STUCK_REASON, SocketRefused, SocketRegistry, close, refuse
from contact_monitor.core.errors import PayloadTooLarge, RequestRefused, Unauthenticated, UserError
from contact_monitor.core.keys import bearer_token, key_of
from contact_monitor.core.services import Services
from contact_monitor.settings import Settings
from subscriptions.shared import current_operation

MAX_BODY_BYTES = 1024 * 1024
log = logging.getLogger(__name__)
SCOPE_KEY = "cm.api_key"


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler, with our close codes (api/sockets.py), the key
    checked again at every `subscribe`, and `extensions.code` on every error it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per live operation: off once the client completes it (api/live.py, Switch).
        self.switches: dict[str, Switch] = {}

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketRefused as exc:
            await close(self.websocket_request, exc.code, exc.reason)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged:
            revoked = await self.context.services.storage.api_keys.revoked_among([self.context.key_name])
            if revoked:
                await close(self.websocket_request, 4403, "API key revoked")
                return
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Runs the operation with `current_operation` set, so that a live subscription shares
        one execution per event with every other subscription of the same operation (api/live.py);
        other operations are not affected by it (the resolver of a live subscription builds its
        LiveOperation once Strawberry has validated the document)."""
        switch = None
        if self.context.shared is not None:
            websocket = self.websocket_request
            switch = live_switch = self.switches[operation.id] = Switch()
            context = self.context
            current_operation.set(
                lambda: live_operation(
                    context,
                    operation.id,
                    operation.query,
                    operation.variables,
                    operation.operation_name,
                    on_stuck=lambda: close(websocket, STUCK_CODE, STUCK_REASON),
                    switch=live_switch,
                )
            )
        try:
            await super().run_operation(operation)
        finally:
            if switch is not None and self.switches.get(operation.id) is switch:
                del self.switches[operation.id]

    async def cleanup_operation(self, operation_id: str) -> None:
        """`complete` from the client (or the socket's end): nothing more is written for the
        operation from now on, even by a group that runs before its task is cancelled."""
        switch = self.switches.pop(operation_id, None)
        if switch is not None:
            switch.on = False
        await super().cleanup_operation(operation_id)

    async def send_message(self, message: Any) -> None:
        if message.get("type") == "error":
            message = {**message, "payload": [with_code(error) for error in message.get("payload", [])]}
        await super().send_message(message)

    @property
    def websocket_request(self) -> WebSocket:
        request: WebSocket = self.context.request
        return request


def with_code(error: dict[str, Any]) -> dict[str, Any]:
    """A formatted error sent over the websocket, with `extensions.code` (BAD_USER_INPUT unless
    it carries one: validation errors and "Subscription limit reached" come without)."""
    extensions = dict(error.get("extensions") or {})
    extensions.setdefault("code", "BAD_USER_INPUT")
    return {**error, "extensions": extensions}


class _StrawberryOriginAdvice(logging.Filter):
    """Strawberry's own warning for a refused origin tells the user to change `allowed_origins`,
    which they cannot: ours names CM_DASHBOARD_ORIGINS instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Rejected WebSocket connection from origin")


logging.getLogger("strawberry.ws").addFilter(_StrawberryOriginAdvice())


class ContactMonitorGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our page around the vendored GraphiQL (api/static/graphiql): nothing from a CDN, the
        API key entered once."""
        return HTMLResponse(
            web.graphiql_page(), headers={**web.PAGE_HEADERS, "Content-Security-Policy": web.GRAPHIQL_POLICY}
        )

    def is_websocket_origin_allowed(self, request: Any, origin: str) -> bool:
        if super().is_websocket_origin_allowed(request, origin):
            return True
        log.warning(
            "refused a /graphql websocket from origin %r (HTTP 403): add it to CM_DASHBOARD_ORIGINS "
            "to let dashboards on it connect",
            origin,
        )
        return False

    def __init__(self, *args: Any, sockets: SocketRegistry, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sockets = sockets

    async def create_websocket_response(self, request: WebSocket, subprotocol: str | None) -> WebSocket:
        """Accept even without a subprotocol we speak (echoing the client's first one), so that
        Strawberry's 4406 close reaches the client instead of a failed handshake (1006)."""
        offered = request.scope.get("subprotocols") or []
        await request.accept(subprotocol=subprotocol or (offered[0] if offered else None))
        return request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry answers requests it refuses (invalid JSON, an empty body, a mutation over
        GET) in plain text; they go through the app's error handler instead, with a code."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope, receive))
        except HTTPException as exc:
            raise RequestRefused(exc.reason, exc.status_code) from None
        await response(scope, receive, send)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Websockets authenticate in `connection_init`: {"authorization": "Bearer <key>"}; a
        missing or invalid key closes the socket with 4403 Forbidden."""
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        header = params.get("authorization") or params.get("Authorization")
        key = await key_of(context.services.storage, header) if isinstance(header, str) else None
        if key is None:
            raise ConnectionRejectionError()
        websocket: WebSocket = context.request
        self.sockets.authenticated(
            websocket.scope[SOCKET_KEY], key["_id"], websocket, context.services.storage
        )
        context.role, context.key_name = key["role"], key["_id"]
        return UNSET  # type: ignore[no-any-return]

    async def get_context(self, request: Any, response: Any) -> Context:
        services: Services = request.state.services
        # Absent for the GraphiQL page (which runs no operation) and for websockets until their
        # connection_init authenticates (on_ws_connect).
        key = request.scope.get(SCOPE_KEY, {"name": "unauthenticated", "role": "none"})
        return Context(
            services=services,
            hub=request.state.hub,
            shared=getattr(request.state, "shared", None),
            role=key["role"],
            key_name=key["name"],
            request=request,
            response=response,
        )

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        """Every error carries extensions.code: ours, BAD_USER_INPUT for invalid queries, else internal."""
        data: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            data["errors"] = [self.format_error(error) for error in result.errors]
        if result.extensions:
            data["extensions"] = result.extensions
        return data

    @staticmethod
    def format_error(error: GraphQLError) -> dict[str, Any]:
        formatted = error.formatted
        original = error.original_error
        extensions = dict(formatted.get("extensions") or {})
        if isinstance(original, UserError):
            extensions["code"] = original.code
        elif original is None or isinstance(original, GraphQLError):
            # Syntax, validation, limits, variables that do not fit their types. A masked
            # internal error already says INTERNAL_SERVER_ERROR (InternalErrorMask).
            extensions.setdefault("code", "BAD_USER_INPUT")
        else:
            extensions["code"] = "INTERNAL_SERVER_ERROR"
        return {**formatted, "extensions": extensions}


class GraphQLEndpoint:
    """Authenticates, then hands over to Strawberry."""

    def __init__(self, settings: Settings) -> None:
        self.graphiql = settings.graphiql
        self.sockets = SocketRegistry(
            max_sockets=settings.ws_max_sockets,
            max_per_key=settings.ws_max_per_key,
            max_unauthenticated=settings.ws_max_unauthenticated,
            recheck_seconds=settings.key_recheck_seconds,
        )
        self.app = ContactMonitorGraphQL(
            schema,
            sockets=self.sockets,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            # Only the current protocol: the legacy one let old clients skip the connect hook.
            subscription_protocols=("graphql-transport-ws",),
            allowed_origins=settings.dashboard_origins,
            connection_init_wait_timeout=dt.timedelta(seconds=10),
            max_subscriptions_per_connection=20,
        )

    def routes(self) -> list[BaseRoute]:
        return [Route("/graphql", self, methods=["GET", "POST"]), WebSocketRoute("/graphql", self)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            socket = self.sockets.admit()
            if socket is None:
                await refuse(
                    scope, receive, send, 1013, "too many websockets on this server; try again later"
                )
                return
            scope[SOCKET_KEY] = socket
            try:
                await self.app(scope, receive, send)  # authenticated in connection_init (on_ws_connect)
            finally:
                self.sockets.gone(socket)
            return
        request = Request(scope, receive)
        if (
            self.graphiql
            and request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and "query" not in request.query_params
        ):
            # The IDE page itself, which runs nothing (Strawberry would run a `query` parameter,
            # so a GET with one needs a key like any other request). Its queries carry the key.
            await self.app(scope, receive, send)
            return
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")
        header = request.headers.get("authorization")
        services: Services = request.state.services
        key = await key_of(services.storage, header)
        if key is None:
            raise Unauthenticated(
                "invalid or revoked API key"
                if bearer_token(header)
                else "missing API key: send Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scope[SCOPE_KEY] = {"name": key["_id"], "role": key["role"]}
        await self.app(scope, limited(receive, MAX_BODY_BYTES), send)


def limited(receive: Receive, limit: int) -> Receive:
    """`receive` that raises `PayloadTooLarge` once the body passes `limit` bytes, whether or not
    the client declared a Content-Length (a chunked body is counted as it arrives)."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"request body larger than {limit} bytes")
        return message

    return receive_limited
