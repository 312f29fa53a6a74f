"""/graphql over HTTP: API keys checked before Strawberry sees the request, context per request.

`Authorization: Bearer <key>` is required; a missing or invalid key raises `Unauthenticated`,
which the app's exception handler answers with a 401 GraphQL-shaped error. GraphiQL (GET with
Accept: text/html) is served only with CM_GRAPHIQL=true.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from api.context import Context
from api.schema import schema
from contact_monitor.core.errors import PayloadTooLarge, RequestRefused, Unauthenticated, UserError
from contact_monitor.core.keys import bearer_token, key_of
from contact_monitor.core.services import Services

MAX_BODY_BYTES = 1024 * 1024
SCOPE_KEY = "cm.api_key"


class ContactMonitorGraphQL(GraphQL[Context, None]):
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

    def __init__(self, graphiql: bool, dashboard_origins: tuple[str, ...]) -> None:
        self.graphiql = graphiql
        self.app = ContactMonitorGraphQL(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            allow_queries_via_get=True,
            # Only the current protocol: the legacy one let old clients skip the connect hook.
            subscription_protocols=("graphql-transport-ws",),
            allowed_origins=dashboard_origins,
            connection_init_wait_timeout=dt.timedelta(seconds=10),
            max_subscriptions_per_connection=20,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)  # authenticated in connection_init (on_ws_connect)
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


def graphql_routes(graphiql: bool, dashboard_origins: tuple[str, ...]) -> list[BaseRoute]:
    endpoint = GraphQLEndpoint(graphiql, dashboard_origins)
    return [Route("/graphql", endpoint, methods=["GET", "POST"]), WebSocketRoute("/graphql", endpoint)]
