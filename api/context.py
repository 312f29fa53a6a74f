"""What every resolver gets through `info.context`: the services, the stream hub, the caller's
role, the loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contact_monitor.core.services import Services
from resolvers.loaders import Loaders
from subscriptions.hub import StreamHub
from subscriptions.shared import SharedFeeds


@dataclass
class Context:
    services: Services
    hub: StreamHub
    role: str
    key_name: str
    # Groups of websocket subscriptions that share one execution per event (None: each
    # subscription executes on its own, CM_SHARED_FEEDS=false).
    shared: SharedFeeds | None = None
    _loaders: Loaders | None = field(default=None, init=False, repr=False)
    # Strawberry's ASGI integration sets these when it builds the context.
    request: Any = None
    response: Any = None
    # The websocket `connection_init` payload; `{"authorization": "Bearer <key>"}` authenticates.
    connection_params: Any = None

    @property
    def loaders(self) -> Loaders:
        """Built when a resolver first needs one (most live events need none)."""
        if self._loaders is None:
            self._loaders = Loaders(self.services.storage)
        return self._loaders

    def forget_loaded(self) -> None:
        """Nothing loaded so far is reused: the next resolver reads afresh."""
        self._loaders = None
