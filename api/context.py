"""What every resolver gets through `info.context`: the services, the caller's role, the loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from api.errors import Forbidden
from resolvers.loaders import Loaders

if TYPE_CHECKING:
    from contact_monitor.app import Services

ROLE_RANK = {"read": 0, "write": 1, "admin": 2}


@dataclass
class Context:
    services: Services
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

    def require(self, role: str) -> None:
        """`Forbidden` unless the caller's key has at least `role`."""
        if ROLE_RANK.get(self.role, -1) < ROLE_RANK[role]:
            raise Forbidden(f"this needs a key with the {role} role; {self.key_name!r} has {self.role}")
