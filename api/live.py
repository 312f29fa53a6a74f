"""Live subscriptions over the websocket, executed once per event for everyone who asked the same.

`TransportWSHandler` (api/app.py) describes each operation it runs with `live_operation`: the key
it shares under (document, variables, operation name, role), a renderer that executes the
operation for one feed item exactly as Strawberry's per-subscriber path would (same executor
class, same masking of internal errors) and serializes the `next` payload once, and a writer
that puts that payload in this operation's frame. The subscription resolver
(api/schema/subscription.py) hands the operation to `subscriptions.shared`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    VariableNode,
    Visitor,
    parse,
    visit,
)
from graphql.execution import Executor, execute_subscription_event
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.context import Context
from api.schema import schema, should_mask
from api.schema.limits import InternalErrorMask
from api.schema.subscription import ActivityEvent
from contact_monitor.storage.redis_client import stop_if_cancelled
from subscriptions.feed import FeedItem
from subscriptions.shared import LiveOperation

log = logging.getLogger(__name__)
# The ASGI scope extension through which the server takes ready-made frames for a socket
# (contact_monitor/serving.py): an object with `write(frames: bytes) -> bool | None`.
RAW_FRAMES = "contact_monitor.raw_frames"
_mask = InternalErrorMask(should_mask_error=should_mask, error_message="Internal server error")


class Renderer:
    """One operation's `next` payload for a feed item, as JSON text.

    The operation is prepared once (variables coerced, fields collected) and each item runs
    on a copy of it, as graphql-core does for the events of one subscription. Loaded data is
    forgotten before each item: a websocket lives for hours, its events must not read a cache.
    """

    def __init__(self, context: Context, query: str, variables: dict[str, Any] | None, name: str | None):
        self.context = Context(
            services=context.services,
            hub=context.hub,
            role=context.role,
            key_name=context.key_name,
            shared=context.shared,
        )
        self.document: DocumentNode = parse(query)
        self.variables = variables
        self.operation_name = name
        self._executor: Executor[Any] | list[GraphQLError] | None = None

    async def __call__(self, item: FeedItem) -> str:
        if self._executor is None:
            self._executor = (schema.execution_context_class or Executor).build(
                schema._schema,
                self.document,
                context_value=self.context,
                raw_variable_values=self.variables,
                operation_name=self.operation_name,
            )
        if isinstance(self._executor, list):  # validated when the operation started: not expected
            return payload_text(None, self._executor)
        self.context.forget_loaded()
        event = self._executor.build_per_event_executor(ActivityEvent(item=item))
        result: Any = execute_subscription_event(event)
        if isawaitable(result):
            result = await result
        return payload_text(result.data, result.errors)


def payload_text(data: Any, errors: list[GraphQLError] | None) -> str:
    """The payload Strawberry sends for a result (`Operation.send_next`), with internal errors
    logged and masked as the schema's InternalErrorMask does."""
    payload: dict[str, Any] = {"data": data}
    if errors:
        schema.process_errors(errors)
        payload["errors"] = [(_mask.anonymise_error(e) if should_mask(e) else e).formatted for e in errors]
    try:
        return orjson.dumps(payload).decode()
    except TypeError:  # an integer past 64 bits, or a lone surrogate, in event data
        return json.dumps(payload, separators=(",", ":"))  # ASCII: every frame encodes


def _after_variable(document: DocumentNode) -> str | None:
    """The variable given as the root field's `after`, when the document uses it nowhere else."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1:
        return None
    roots = [s for s in operations[0].selection_set.selections if isinstance(s, FieldNode)]
    if len(roots) != 1:
        return None
    after = next((a.value for a in roots[0].arguments or () if a.name.value == "after"), None)
    if not isinstance(after, VariableNode):
        return None
    uses: list[str] = []

    class Uses(Visitor):
        def enter_variable(self, node: VariableNode, *_: Any) -> None:
            uses.append(node.name.value)

        def enter_variable_definition(self, *_: Any) -> Any:
            return self.SKIP  # the declaration is not a use

    visit(document, Uses())
    return after.name.value if uses.count(after.name.value) == 1 else None


class Switch:
    """Off once the client completed the operation (or its socket closed): nothing more is
    written for it, even by a group that has not noticed yet."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


async def until_cancelled() -> None:
    """Wait for the cancellation that ends this operation; at once when it came already (a
    cancel that arrived while a send to a closing socket ran can end as that send's error, and
    waiting for another would hold the socket, and the server's shutdown, forever)."""
    stop_if_cancelled()
    await asyncio.Event().wait()


def live_operation(
    context: Context,
    operation_id: str,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    on_stuck: Callable[[], Awaitable[None]],
    switch: Switch,
) -> LiveOperation:
    """Called by the subscription resolver, after Strawberry has validated the operation."""
    websocket: WebSocket = context.request
    # The message around a payload: the operation id is the client's, the payload is shared.
    prefix = '{"id":' + json.dumps(operation_id) + ',"type":"next","payload":'
    head = prefix.encode()

    async def write(payload: str) -> None:
        try:
            if switch.on:
                await websocket.send_text(prefix + payload + "}")
                return
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        # Completed, or the socket is gone or closing: its handler cancels this operation (when
        # it sees the disconnect); until then nothing more is written.
        await until_cancelled()

    renderer = Renderer(context, query, variables, operation_name)
    # `after` only chooses where this member's history starts; it does not change what an event
    # renders to, so dashboards resuming from different cursors still share one group.
    cursor = _after_variable(renderer.document)
    shared = {name: value for name, value in (variables or {}).items() if name != cursor}
    try:
        canonical = orjson.dumps(shared, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        canonical = json.dumps(shared, sort_keys=True, default=str)
    key = (query, canonical, operation_name, context.role)
    sink = websocket.scope.get("extensions", {}).get(RAW_FRAMES)

    def raw(frames: bytes) -> bool | None:
        return sink.write(frames) if switch.on else False

    return LiveOperation(
        key=key,
        render=renderer,
        write=write,
        on_stuck=on_stuck,
        raw=raw if sink is not None else None,
        wire_key=operation_id,
        encode=lambda payload: text_frame(head + payload.encode() + b"}"),
        abort=sink.abort if sink is not None else None,
    )


def text_frame(data: bytes) -> bytes:
    """One unmasked, unfragmented, uncompressed websocket text frame (RFC 6455, 5.2)."""
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 65_536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + data
