"""/graphql over HTTP: API keys checked before Strawberry sees the request, context per request.

`Authorization: Bearer <key>` is required; a missing or invalid key answers 401 with a
GraphQL-shaped error. GraphiQL (GET with Accept: text/html) is served only with CM_GRAPHIQL=true.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from api.auth import bearer_token
from api.context import Context
from api.errors import ApiError
from api.schema import schema

if TYPE_CHECKING:
    from contact_monitor.app import Services

MAX_BODY_BYTES = 1024 * 1024
SCOPE_KEY = "cm.api_key"


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    body = {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


class ContactMonitorGraphQL(GraphQL[Context, None]):
    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Websockets authenticate in `connection_init`: {"authorization": "Bearer <key>"}; a
        missing or invalid key closes the socket with 4403 Forbidden."""
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        header = params.get("authorization") or params.get("Authorization")
        token = bearer_token(header) if isinstance(header, str) else None
        key = await context.services.storage.api_keys.authenticate(token) if token else None
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
            services=services, role=key["role"], key_name=key["name"], request=request, response=response
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
        if isinstance(original, ApiError):
            extensions["code"] = original.code
        elif original is None:
            extensions.setdefault("code", "BAD_USER_INPUT")  # syntax, validation, depth limit
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
        if self.graphiql and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            await self.app(scope, receive, send)  # the IDE page itself; its queries carry the key
            return
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await error_response(413, f"request body larger than {MAX_BODY_BYTES} bytes", "BAD_USER_INPUT")(
                scope, receive, send
            )
            return
        token = bearer_token(request.headers.get("authorization"))
        services: Services = request.state.services
        key = await services.storage.api_keys.authenticate(token) if token else None
        if key is None:
            message = (
                "invalid or revoked API key" if token else "missing API key: send Authorization: Bearer <key>"
            )
            await error_response(401, message, "UNAUTHENTICATED", {"WWW-Authenticate": "Bearer"})(
                scope, receive, send
            )
            return
        scope[SCOPE_KEY] = {"name": key["_id"], "role": key["role"]}
        await self.app(scope, receive, send)


def graphql_routes(graphiql: bool, dashboard_origins: tuple[str, ...]) -> list[BaseRoute]:
    endpoint = GraphQLEndpoint(graphiql, dashboard_origins)
    return [Route("/graphql", endpoint, methods=["GET", "POST"]), WebSocketRoute("/graphql", endpoint)]
