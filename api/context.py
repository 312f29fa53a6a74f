"""What every resolver gets through `info.context`: the services, the stream hub, the caller's
role, the loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contact_monitor.core.services import Services
from resolvers.loaders import Loaders
from subscriptions.hub import StreamHub


@dataclass
class Context:
    services: Services
    hub: StreamHub
    role: str
    key_name: str
    loaders: Loaders = field(init=False)
    # Strawberry's ASGI integration sets these when it builds the context.
    request: Any = None
    response: Any = None
    # The websocket `connection_init` payload; `{"authorization": "Bearer <key>"}` authenticates.
    connection_params: Any = None

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.services.storage)
