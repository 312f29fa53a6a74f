"""Who may call what: every root field of the schema declares the role it needs, as a Strawberry
permission class (tests/api/test_permissions.py fails on a field without one).

Roles are ranked: read < write < admin; a key satisfies every role up to its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from strawberry.permission import BasePermission

from api.context import Context
from contact_monitor.core.errors import Forbidden

ROLE_RANK = {"read": 0, "write": 1, "admin": 2}


class RolePermission(BasePermission):
    role: ClassVar[str]

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        context: Context = info.context
        if ROLE_RANK.get(context.role, -1) < ROLE_RANK[self.role]:
            # Raised here rather than through `message`: the message names the caller's key.
            raise Forbidden(
                f"this needs a key with the {self.role} role; {context.key_name!r} has {context.role}"
            )
        return True


class CanRead(RolePermission):
    role = "read"


class CanWrite(RolePermission):
    role = "write"


class IsAdmin(RolePermission):
    role = "admin"


READ: list[type[BasePermission]] = [CanRead]
WRITE: list[type[BasePermission]] = [CanWrite]
ADMIN: list[type[BasePermission]] = [IsAdmin]
