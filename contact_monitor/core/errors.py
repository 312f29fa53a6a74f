"""The errors the core reports to its callers. Each has one `code`; the GraphQL adapter puts it in
`extensions.code`, the HTTP adapters map it to a status. Anything else is an internal error."""

from __future__ import annotations

from typing import ClassVar


class UserError(Exception):
    """An error reported as it is: the message is for the user."""

    code: ClassVar[str] = "BAD_USER_INPUT"
    # The HTTP status when the error ends a request outside GraphQL execution.
    status: int = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        # graphql-core copies an original error's `extensions` into the GraphQL error, so the
        # code reaches every transport (HTTP and websocket) the same way.
        self.extensions = {"code": self.code}


class BadUserInput(UserError):
    code = "BAD_USER_INPUT"


class PayloadTooLarge(BadUserInput):
    status = 413


class RequestRefused(BadUserInput):
    """A request the protocol refuses as a whole (bad JSON, a mutation over GET, ...)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class NotFound(UserError):
    code = "NOT_FOUND"
    status = 404


class Unauthenticated(UserError):
    code = "UNAUTHENTICATED"
    status = 401


class Forbidden(UserError):
    code = "FORBIDDEN"
    status = 403


class FieldError(BadUserInput):
    """A field cannot be created or changed as asked; the message says why."""


class MergeInProgress(UserError):
    """One of the contacts is being merged by another request at this moment; retry."""

    code = "CONFLICT"
    status = 409
